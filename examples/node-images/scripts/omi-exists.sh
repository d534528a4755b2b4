#!/bin/sh
# Exit 0 if an OMI named $1 exists in region $2, printing its id (imagepipe
# records it as the region's image), 1 if not (imagepipe then plans `skip` or
# `build`). Uses the Outscale CLI (oapi-cli); credentials from the environment.
set -u
name="$1" region="$2"
out=$(oapi-cli --region "$region" ReadImages --Filters.ImageNames "[\"$name\"]") || exit 2
case "$out" in
  *'"ImageId"'*)
    printf '%s\n' "$out" | tr ',' '\n' | sed -n 's/.*"ImageId": *"\([^"]*\)".*/\1/p' | head -n 1
    exit 0 ;;
  *) exit 1 ;;
esac
