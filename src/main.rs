fn main() -> std::process::ExitCode {
    imagepipe::cli::run()
}
