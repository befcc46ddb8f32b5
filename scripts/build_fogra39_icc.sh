#!/usr/bin/env bash
# Build texprod's default press CMYK output profile (FOGRA39 class, ISO Coated v2)
# from the FOGRA39L characterisation data shipped in Debian's icc-profiles-free,
# using ArgyllCMS colprof.  Writes texprod/data/icc/FOGRA39-texprod.icc.
#
# Only maintainers need this script (and Argyll); the resulting .icc is committed
# as package data.  The build is reproducible: colprof's output is deterministic
# for a given Argyll version/architecture except for the creation date in the ICC
# header, which is normalised to a fixed value below (override with
# TEXPROD_ICC_DATE=YYYY-MM-DDTHH:MM:SS).
#
# Usage: scripts/build_fogra39_icc.sh [output.icc]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO_ROOT/texprod/data/icc/FOGRA39-texprod.icc}"
ICC_DATE="${TEXPROD_ICC_DATE:-2000-01-01T00:00:00}"
PYTHON="${PYTHON:-$(command -v python3 || true)}"

# Profile recipe: coated offset, ISO 12647-2 / FOGRA39.
#   -qm     medium quality: fit dE 0.16 avg; -qh (0.05) overshoots the 300 % limit (301.4 %)
#   -S      source gamut sRGB (same package): real perceptual/saturation tables for
#           sRGB renders; without it Argyll copies the colorimetric table into them
#   -kr     black generation: ramp K (0 at white -> max at black), Argyll's default GCR
#   -l300   total area coverage (TAC) limit 300 %
#   -L95    black ink limit 95 %
DESC="texprod FOGRA39 (ISO Coated v2 class) built from FOGRA39L"
COPYRIGHT="Derived by texprod with ArgyllCMS colprof from the FOGRA39L characterisation data (originator Fogra, www.fogra.org) as shipped in Debian icc-profiles-free (data copyright Kai-Uwe Behrmann, zlib licence). Provided as-is, without warranty."
COLPROF_ARGS=(-v -qm -kr -l300 -L95)
TAC_LIMIT=300

log() { printf '[build_fogra39_icc] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- 1. dependencies --------------------------------------------------------
need_install=0
command -v colprof >/dev/null 2>&1 || need_install=1
command -v xicclu >/dev/null 2>&1 || need_install=1
dpkg -s icc-profiles-free >/dev/null 2>&1 || need_install=1
if [ "$need_install" -eq 1 ]; then
    log "installing argyll icc-profiles-free"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y argyll icc-profiles-free; then
        as_root apt-get update
        as_root apt-get install -y argyll icc-profiles-free
    fi
fi
if [ -z "$PYTHON" ]; then
    log "python3 not found (needed to normalise the ICC header)"; exit 1
fi

TI3="$(dpkg -L icc-profiles-free | grep -E '/FOGRA39L\.ti3$' | head -n1 || true)"
if [ -z "$TI3" ] || [ ! -f "$TI3" ]; then
    log "FOGRA39L.ti3 not found in package icc-profiles-free"; exit 1
fi

log "argyll            $(dpkg-query -W -f='${Version}' argyll)"
log "icc-profiles-free $(dpkg-query -W -f='${Version}' icc-profiles-free)"
log "source data       $TI3"
log "source sha256     $(sha256sum "$TI3" | cut -d' ' -f1)"

# --- 2. colprof in a temp dir ----------------------------------------------
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp "$TI3" "$WORK/FOGRA39L.ti3"
SRGB="$(dirname "$TI3")/sRGB.icc"
[ -f "$SRGB" ] || { log "sRGB.icc not found beside $TI3"; exit 1; }
COLPROF_ARGS+=(-S "$SRGB")

log "running: colprof ${COLPROF_ARGS[*]} -D \"$DESC\" -C \"...\" -O profile.icc FOGRA39L"
start=$(date +%s)
(cd "$WORK" && colprof "${COLPROF_ARGS[@]}" -D "$DESC" -C "$COPYRIGHT" -O profile.icc FOGRA39L) \
    >"$WORK/colprof.log" 2>&1 || { tail -n 40 "$WORK/colprof.log" >&2; exit 1; }
log "colprof finished in $(( $(date +%s) - start )) s"

echo "== colprof fit statistics (Lab dE76 of profile vs. FOGRA39L patches) =="
tr '\r' '\n' <"$WORK/colprof.log" \
    | grep -E '^(No of test patches|White point XYZ|Black point XYZ|Profile check complete)' || true

# --- 3. normalise header date (and profile ID where one is present) ----------
"$PYTHON" - "$WORK/profile.icc" "$ICC_DATE" <<'PY'
import datetime
import hashlib
import struct
import sys

path, stamp = sys.argv[1], sys.argv[2]
d = bytearray(open(path, "rb").read())
assert struct.unpack(">I", d[0:4])[0] == len(d), "ICC size field mismatch"
assert d[36:40] == b"acsp", "not an ICC profile"
t = datetime.datetime.fromisoformat(stamp)
d[24:36] = struct.pack(">6H", t.year, t.month, t.day, t.hour, t.minute, t.second)
# Profile ID (v4; bytes 84..99 are reserved/zero in v2): MD5 over the whole profile
# with flags (44..47), rendering intent (64..67) and the ID itself zeroed.
major = d[8]
if major >= 4 or any(d[84:100]):
    tmp = bytearray(d)
    tmp[44:48] = b"\0" * 4
    tmp[64:68] = b"\0" * 4
    tmp[84:100] = b"\0" * 16
    d[84:100] = hashlib.md5(tmp).digest()
    id_note = "profile ID recomputed"
else:
    id_note = "v2 profile, profile ID left zero"
open(path, "wb").write(bytes(d))
print(f"== header: version {d[8]}.{d[9] >> 4}.{d[9] & 15}, class {bytes(d[12:16]).decode()!r}, "
      f"space {bytes(d[16:20]).decode()!r}, PCS {bytes(d[20:24]).decode()!r}, date {t.isoformat()}, {id_note}")
if (bytes(d[12:16]), bytes(d[16:20])) != (b"prtr", b"CMYK"):
    sys.exit("unexpected device class / colour space")
PY

# --- 4. ink-limit check: Lab grid through the B2A (relative colorimetric) table -
"$PYTHON" -c '
for L in range(0, 101, 2):
    for a in range(-128, 128, 4):
        for b in range(-128, 128, 4):
            print(L, a, b)
' >"$WORK/lab_grid.txt"
read -r max_tac max_k < <(xicclu -v0 -fb -ir -pl -s100 "$WORK/profile.icc" <"$WORK/lab_grid.txt" \
    | awk '{s=$1+$2+$3+$4; if (s>m) m=s; if ($4>k) k=$4} END {printf "%.2f %.2f\n", m, k}')
echo "== ink limits over a Lab grid (B2A1): max total ink ${max_tac}%, max K ${max_k}%"
if awk -v t="$max_tac" -v l="$TAC_LIMIT" 'BEGIN {exit !(t > l + 0.5)}'; then
    log "max total ink ${max_tac}% exceeds ${TAC_LIMIT}%"; exit 1
fi

# --- 5. install into the package ---------------------------------------------
mkdir -p "$(dirname "$OUT")"
cp "$WORK/profile.icc" "$OUT"
echo "== wrote $OUT ($(stat -c %s "$OUT") bytes)"
echo "sha256 $(sha256sum "$OUT" | cut -d' ' -f1)  $(basename "$OUT")"
