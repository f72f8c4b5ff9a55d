#!/usr/bin/env bash
# Download COCO 2017 (train/val images + annotations incl. person_keypoints_*.json) into
# DIR (default: entity.params['coco_dir'], i.e. "coco").
#
#   bash getData.sh [DIR]
#
# * resumable: an interrupted download continues where it stopped (curl -C -) on the next run;
# * skips what is complete: each extracted zip leaves DIR/.complete_<zip>; a rerun downloads
#   nothing for it;
# * verifies: the size against the server's Content-Length, the MD5 against the published
#   checksum, then every member's CRC (unzip -tq) before extracting;
# * atomic: a zip is extracted into DIR/.extract_<zip>/ and its top-level entries are moved
#   into DIR only after the whole extraction succeeded; the marker comes last.
#
# Environment: COCO_URL_BASE (default http://images.cocodataset.org) replaces the server;
# COCO_MD5SUMS=FILE (md5sum format: "<md5>  <zip>") replaces the built-in checksums;
# COCO_FILES="zips/val2017.zip ..." limits the download; KEEP_ZIPS=1 keeps the zips.
set -u -o pipefail

die() { echo "getData.sh: error: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ge 1 ]; then
    dir=$1
else
    dir=$(cd "$here" && "${PYTHON:-python3}" -c 'from entity import params; print(params["coco_dir"])' 2>/dev/null) || dir=coco
fi
base=${COCO_URL_BASE:-http://images.cocodataset.org}
base=${base%/}
files=${COCO_FILES:-zips/train2017.zip zips/val2017.zip annotations/annotations_trainval2017.zip}

command -v curl >/dev/null || die "curl is not installed"
command -v unzip >/dev/null || die "unzip is not installed"
command -v md5sum >/dev/null || die "md5sum is not installed"

# Published MD5s of the COCO 2017 zips.
expected_md5() {
    local name=$1
    if [ -n "${COCO_MD5SUMS:-}" ]; then
        [ -f "$COCO_MD5SUMS" ] || die "COCO_MD5SUMS=$COCO_MD5SUMS: no such file"
        awk -v n="$name" '$2 == n || $2 == "*"n {print $1; exit}' "$COCO_MD5SUMS"
        return
    fi
    case $name in
        train2017.zip) echo cced6f7f71b7629ddf16f17bbcfab6b2 ;;
        val2017.zip) echo 442b8da7639aecaf257c1dceb8ba8c80 ;;
        annotations_trainval2017.zip) echo f4bbac642086de4f52a3fdda2de5fa2c ;;
    esac
}

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# Content-Length of a URL (after redirects); fails with a one-line message when offline.
remote_size() {
    local url=$1 headers size
    headers=$(curl -sS -fIL --connect-timeout 20 --retry 2 "$url" 2>&1) \
        || die "cannot reach $url ($(echo "$headers" | tail -n 1 | sed 's/^curl: ([0-9]*) //'))"
    size=$(echo "$headers" | tr -d '\r' | awk 'tolower($1) == "content-length:" {s = $2} END {print s}')
    [ -n "$size" ] || die "$url: the server sent no Content-Length"
    echo "$size"
}

mkdir -p "$dir" || die "cannot create $dir"

for f in $files; do
    name=$(basename "$f")
    url="$base/$f"
    zip="$dir/$name"
    marker="$dir/.complete_$name"
    if [ -e "$marker" ]; then
        echo "$name: already downloaded and extracted, skipping"
        continue
    fi
    size=$(remote_size "$url") || exit 1
    part="$zip.part"
    if [ "$(file_size "$zip")" != "$size" ]; then
        [ -e "$zip" ] && mv -f "$zip" "$part"   # a wrong-size zip: continue or restart it
        have=$(file_size "$part")
        if [ "$have" -gt "$size" ]; then
            rm -f "$part"
            have=0
        fi
        if [ "$have" -lt "$size" ]; then
            echo "$name: downloading $url ($size bytes, $have already here)"
            curl -fL --retry 3 --connect-timeout 20 -C - -o "$part" "$url"
            rc=$?
            if [ $rc -eq 33 ]; then  # the server ignores byte ranges: start again
                echo "$name: server cannot resume, downloading from the start"
                curl -fL --retry 3 --connect-timeout 20 -o "$part" "$url"
                rc=$?
            fi
            [ $rc -eq 0 ] || die "downloading $url failed (curl exit $rc); rerun getData.sh to resume"
        fi
        got=$(file_size "$part")
        [ "$got" = "$size" ] || die "$name: got $got bytes, expected $size; rerun getData.sh to resume"
        mv -f "$part" "$zip"
    else
        echo "$name: already downloaded ($size bytes)"
    fi

    md5=$(expected_md5 "$name")
    if [ -n "$md5" ]; then
        echo "$name: checking MD5"
        actual=$(md5sum "$zip" | cut -d' ' -f1)
        if [ "$actual" != "$md5" ]; then
            rm -f "$zip"
            die "$name: MD5 $actual, expected $md5 (corrupt download deleted; rerun getData.sh)"
        fi
    fi
    echo "$name: testing the archive"
    if ! unzip -tq "$zip" >/dev/null 2>&1; then
        rm -f "$zip"
        die "$name: corrupt or truncated zip (unzip -t failed; deleted it, rerun getData.sh)"
    fi

    need=$(unzip -Zt "$zip" 2>/dev/null | awk '{print $3}')  # bytes when extracted
    free=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 {print $4}')
    if [ -n "$need" ] && [ -n "$free" ] && [ $((need / 1024)) -gt "$free" ]; then
        die "$name: extracting needs $((need / 1048576)) MB, $dir has $((free / 1024)) MB free"
    fi

    tmp="$dir/.extract_$name"
    rm -rf "$tmp"
    mkdir -p "$tmp" || die "cannot create $tmp"
    echo "$name: extracting"
    unzip -q "$zip" -d "$tmp" || { rm -rf "$tmp"; die "$name: extraction failed (disk full?)"; }
    for entry in "$tmp"/* "$tmp"/.[!.]*; do
        [ -e "$entry" ] || continue
        target="$dir/$(basename "$entry")"
        if [ -d "$entry" ] && [ -d "$target" ]; then
            # merge into an existing directory (e.g. annotations/ from another zip)
            (cd "$entry" && find . -mindepth 1 -maxdepth 1 -print0) | while IFS= read -r -d '' sub; do
                rm -rf "$target/$sub"
                mv "$entry/$sub" "$target/$sub" || exit 1
            done || { rm -rf "$tmp"; die "$name: cannot move files into $target"; }
        else
            rm -rf "$target"
            mv "$entry" "$target" || { rm -rf "$tmp"; die "$name: cannot move $entry to $target"; }
        fi
    done
    rm -rf "$tmp"
    touch "$marker"
    [ "${KEEP_ZIPS:-0}" = 1 ] || rm -f "$zip"
    echo "$name: done"
done
echo "COCO 2017 is in $dir"
