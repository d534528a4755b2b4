# Shared by the bench scripts (source it).

# real_files_ext4 FILE SIZE: a raw ext4 image of this machine's real files
# (shared libraries, docs, binaries, locales, man pages, Python's library).
real_files_ext4() {
  local file="$1" size="$2" stage
  stage="$(dirname "$file")/stage"
  rm -rf "$stage" && mkdir -p "$stage"
  for d in /usr/lib/x86_64-linux-gnu /usr/share/doc /usr/bin /usr/share/locale /usr/share/man /usr/lib/python3; do
    [ -e "$d" ] && cp -a "$d" "$stage/"
  done
  mke2fs -q -t ext4 -d "$stage" "$file" "$size"
  rm -rf "$stage"
}
