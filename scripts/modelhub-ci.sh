#!/bin/sh
# modelhub-ci.sh: register, deploy and promote a model version from CI with
# nothing but curl (7.55 or later) and POSIX sh tools (sed, awk, date). No jq,
# no Python.
#
#   modelhub-ci.sh [release]     upload ARTIFACT + MANIFEST as a new version of MODEL,
#                                deploy it to SERVER (or every server labelled LABEL),
#                                wait until Triton serves it, then point ALIAS at it
#   modelhub-ci.sh upload        upload only
#   modelhub-ci.sh deploy N      deploy version N to SERVER / LABEL and wait until loaded
#   modelhub-ci.sh promote N     point ALIAS at version N; with SERVER or LABEL set,
#                                deploy it there and wait until it is loaded first
#   modelhub-ci.sh rollback N    the same as promote: rolling back is moving the alias
#                                back to an earlier version
#   --gate (or GATE=1) with release, promote or rollback: ModelHub moves ALIAS only if
#                                the version passes the promotion gates (loaded, conforms
#                                to its schema, p95 within the model's latency SLO,
#                                accuracy no worse than the current version's minus the
#                                tolerance); a failed gate fails the pipeline, naming it
#                                and its figures. E.g. modelhub-ci.sh promote --gate 7
#
# The version number is the only thing printed on stdout (V=$(modelhub-ci.sh)),
# progress and errors go to stderr. Any failure (an HTTP error, a failed load on
# Triton, a timeout, an unreachable ModelHub) exits non-zero with the API's own
# error message, so the pipeline fails.
#
# Environment:
#   MODELHUB_URL      ModelHub's base URL, e.g. https://modelhub.example.com   (required)
#   MODELHUB_TOKEN    API token with the scopes the mode needs: upload (release, upload),
#                     deploy (release, deploy, promote, rollback)              (required)
#   MODEL             model name (created by the first upload if the token may)  (required)
#   ARTIFACT          .zip / .tar.gz of the Triton model folder, or a bare model.onnx
#   MANIFEST          path of the manifest JSON file (schema, backend, provenance, ...)
#   SERVER | LABEL    where to deploy: one server's name, or all servers with a label
#   ALIAS             alias to move (default: staging)
#   GATE              1: promote past the promotion gates only (the same as --gate)
#   WAIT_SECONDS      how long to wait for Triton to load the version (default: 300)
#   POLL_SECONDS      how often to look (default: 2)
#   MODELHUB_CURL_OPTS  extra curl options, e.g. "--cacert /etc/ssl/modelhub.pem"
#
# Every request is safe to retry (the same bytes are the same version, a deploy
# or alias move repeated changes nothing), so curl retries transient failures.
set -eu

PROG=modelhub-ci

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# --- JSON without jq -----------------------------------------------------------
# json_flat < body: one "path=value" line per scalar, e.g.
#   number=3
#   deployments[0].observed=pending
#   error.message=manifest.inputs[0].datatype: unknown datatype 'FP33'
# Strings are unquoted with \" \\ \/ decoded; other escapes (\n, \uXXXX) are kept
# as written, so every value stays on one line.
json_flat() {
  LC_ALL=C awk '
    { buf = buf $0 "\n" }
    function path(   p, d) {
      p = ""
      for (d = 1; d <= depth; d++) {
        if (kind[d] == "o") p = p (p == "" ? "" : ".") key[d]
        else p = p "[" idx[d] "]"
      }
      return p
    }
    END {
      n = length(buf); i = 1; depth = 0
      while (i <= n) {
        c = substr(buf, i, 1)
        if (c == "{") { depth++; kind[depth] = "o"; key[depth] = ""; want_key[depth] = 1; i++ }
        else if (c == "[") { depth++; kind[depth] = "a"; idx[depth] = 0; i++ }
        else if (c == "}" || c == "]") { depth--; i++ }
        else if (c == ",") { if (kind[depth] == "a") idx[depth]++; else want_key[depth] = 1; i++ }
        else if (c == ":") { want_key[depth] = 0; i++ }
        else if (c == "\"") {
          s = ""; i++
          while (i <= n) {
            c = substr(buf, i, 1)
            if (c == "\\") {
              e = substr(buf, i + 1, 1)
              if (e == "\"" || e == "\\" || e == "/") s = s e; else s = s "\\" e
              i += 2
            } else if (c == "\"") { i++; break }
            else { s = s c; i++ }
          }
          if (depth > 0 && kind[depth] == "o" && want_key[depth]) key[depth] = s
          else print path() "=" s
        }
        else if (c == " " || c == "\t" || c == "\n" || c == "\r") i++
        else {
          j = i
          while (j <= n && index(",}] \t\r\n", substr(buf, j, 1)) == 0) j++
          print path() "=" substr(buf, i, j - i)
          i = j
        }
      }
    }'
}

# json_get KEY < body: the value at path KEY of json_flat (first one), or nothing.
json_get() {
  json_flat | awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }'
}

# JSON string literal of $1 (escapes \ and ").
json_str() {
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# --- HTTP ------------------------------------------------------------------------
# api METHOD PATH [curl args...]: the answer's body is in $BODY; returns on 2xx,
# exits with the API's error message otherwise.
api() {
  method=$1
  path=$2
  shift 2
  # shellcheck disable=SC2086  # MODELHUB_CURL_OPTS is a list of options
  if ! code=$(curl -sS -o "$BODY" -D "$HEADERS" -w '%{http_code}' -X "$method" \
    -H @"$AUTH_HEADER" -H 'Accept: application/json' \
    --connect-timeout 10 --retry 3 --retry-delay 2 ${MODELHUB_CURL_OPTS:-} \
    "$@" "$BASE$path"); then
    die "$method $BASE$path: no answer from ModelHub (curl failed; check MODELHUB_URL and the network)"
  fi
  case $code in
    2??) return 0 ;;
  esac
  message=$(json_get error.message <"$BODY" || true)
  if [ -z "$message" ]; then
    message=$(json_get detail <"$BODY" || true)
  fi
  if [ -z "$message" ]; then # not ModelHub's JSON (a proxy's page?): show its start
    message=$(tr '\n' ' ' <"$BODY" | cut -c 1-500)
  fi
  show_gates <"$BODY"
  # ModelHub's message already names every field at fault (error.fields too).
  die "$method $path failed: HTTP $code: $message"
}

# show_gates < body: each gate of a refused gated promotion on its own line (stderr).
show_gates() {
  json_flat | LC_ALL=C awk '
    /^gates\[[0-9]+\]\.(name|status|message)=/ {
      i = $0; sub(/^gates\[/, "", i); sub(/\].*/, "", i)
      k = $0; sub(/^gates\[[0-9]+\]\./, "", k); v = k; sub(/=.*/, "", k); sub(/^[^=]*=/, "", v)
      val[i, k] = v; if (i + 1 > n) n = i + 1
    }
    END { for (i = 0; i < n; i++) printf "%s:   gate %s: %s: %s\n", prog, val[i, "name"], val[i, "status"], val[i, "message"] }
  ' prog="$PROG" >&2
}

need() {
  eval "value=\${$1:-}"
  [ -n "$value" ] || die "$1 is not set${2:+ ($2)}"
}

check_name() { # check_name VAR: a slug safe in a URL path
  eval "value=\${$1}"
  case $value in
    "" | *[!a-z0-9_-]*) die "$1='$value' is not a valid name (lowercase letters, digits, '-' and '_')" ;;
  esac
}

check_number() {
  case $1 in
    "" | *[!0-9]*) die "version '$1' is not a number" ;;
  esac
}

# --- steps -----------------------------------------------------------------------
upload() {
  need ARTIFACT "the model folder as .zip / .tar.gz, or a model.onnx"
  need MANIFEST "path of the manifest JSON file"
  [ -f "$ARTIFACT" ] || die "ARTIFACT=$ARTIFACT is not a file"
  [ -f "$MANIFEST" ] || die "MANIFEST=$MANIFEST is not a file"
  case $ARTIFACT$MANIFEST in
    *[\;,]*) die "curl -F cannot send file names containing ';' or ','; rename $ARTIFACT / $MANIFEST" ;;
  esac
  say "uploading $ARTIFACT as a new version of $MODEL"
  api POST "/api/v1/models/$MODEL/versions/" -F "artifact=@$ARTIFACT" -F "manifest=<$MANIFEST"
  VERSION=$(json_get number <"$BODY")
  case $VERSION in
    "" | *[!0-9]*) die "the upload answer (HTTP $code) has no version number: $(tr '\n' ' ' <"$BODY" | cut -c 1-500)" ;;
  esac
  sha=$(json_get sha256 <"$BODY")
  case $code in
    201) say "registered $MODEL version $VERSION (sha256 $sha)" ;;
    *) say "these bytes are already $MODEL version $VERSION (sha256 $sha): nothing new registered" ;;
  esac
}

deploy() { # deploy N: request the deployment and wait until Triton serves it
  if [ -n "${SERVER:-}" ]; then
    target="{\"server\": $(json_str "$SERVER")}"
    where="server $SERVER"
  elif [ -n "${LABEL:-}" ]; then
    target="{\"label\": $(json_str "$LABEL")}"
    where="servers labelled $LABEL"
  else
    die "set SERVER (a server's name) or LABEL (deploy to every server with that label)"
  fi
  say "deploying $MODEL version $1 to $where"
  api POST "/api/v1/models/$MODEL/versions/$1/deploy/" -H 'Content-Type: application/json' --data "$target"
  ids=$(json_flat <"$BODY" | sed -n -e 's/^\[[0-9]*\]\.id=//p' -e 's/^deployments\[[0-9]*\]\.id=//p')
  [ -n "$ids" ] || die "the deploy request matched no server ($where)"
  wait_loaded "$1" "$ids"
}

# failure_is_new FLAT: whether a "failed" deployment answers our request, or
# is still "failed" from before it (redeploying a version whose load failed
# starts from there). It answers us once the reconciler has looked since the
# request: checked_at >= desired_at, both stamped by ModelHub's own clock.
failure_is_new() {
  printf '%s\n' "$1" | awk '
    function stamp(t) { gsub(/[^0-9]/, "", t); return substr(t "000000000000000000000", 1, 20) }
    /^desired_at=/ { d = substr($0, 12) }
    /^checked_at=/ { c = substr($0, 12) }
    END { if (c == "" || c == "null") exit 1; exit (stamp(c) >= stamp(d)) ? 0 : 1 }'
}

wait_loaded() { # wait_loaded N "ID ...": poll each deployment until observed=loaded
  started=$(date +%s)
  deadline=$((started + WAIT_SECONDS))
  while :; do
    pending=""
    for id in $2; do
      api GET "/api/v1/deployments/$id/"
      flat=$(json_flat <"$BODY")
      observed=$(printf '%s\n' "$flat" | sed -n 's/^observed=//p')
      server=$(printf '%s\n' "$flat" | sed -n -e 's/^server=//p' -e 's/^server\.name=//p' -e 's/^server_name=//p')
      case $observed in
        loaded) ;;
        failed)
          error=$(printf '%s\n' "$flat" | sed -n 's/^last_error=//p')
          if failure_is_new "$flat"; then
            die "version $1 failed to load on ${server:-deployment $id}: ${error:-no error text}"
          fi
          pending="$pending ${server:-#$id}=failed-before(${error:-no error text})"
          ;;
        *) pending="$pending ${server:-#$id}=${observed:-?}" ;;
      esac
    done
    if [ -z "$pending" ]; then
      say "version $1 is loaded on every target"
      return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "version $1 was not loaded within ${WAIT_SECONDS}s (still:$pending); raise WAIT_SECONDS or look at the deployment in ModelHub"
    fi
    sleep "$POLL_SECONDS"
  done
}

promote() { # promote N: point ALIAS at version N (past the gates with GATE=1)
  if [ -n "$GATE" ]; then
    say "pointing $MODEL@$ALIAS at version $1 if it passes the promotion gates"
    api PUT "/api/v1/models/$MODEL/aliases/$ALIAS/" -H 'Content-Type: application/json' \
      --data "{\"version\": $1, \"gate\": true}"
    say "version $1 passed every gate"
  else
    say "pointing $MODEL@$ALIAS at version $1"
    api PUT "/api/v1/models/$MODEL/aliases/$ALIAS/" -H 'Content-Type: application/json' --data "{\"version\": $1}"
  fi
}

# --- main ------------------------------------------------------------------------
MODE=${1:-release}
case $MODE in -h | --help | help) usage ;; esac
[ $# -eq 0 ] || shift
case ${GATE:-} in
  "" | 0 | false | no) GATE="" ;;
  1 | true | yes) GATE=1 ;;
  *) die "GATE='$GATE' must be 1 (promote past the gates) or 0" ;;
esac
POSITIONAL=""
for arg in "$@"; do
  case $arg in
    --gate) GATE=1 ;;
    -*) usage ;;
    *) POSITIONAL="$POSITIONAL $arg" ;;
  esac
done
# shellcheck disable=SC2086  # the positional arguments, split again (a version number has no spaces)
set -- $POSITIONAL

need MODELHUB_URL "e.g. https://modelhub.example.com"
need MODELHUB_TOKEN "an API token; see docs/ci/README.md"
need MODEL
check_name MODEL
ALIAS=${ALIAS:-staging}
check_name ALIAS
WAIT_SECONDS=${WAIT_SECONDS:-300}
POLL_SECONDS=${POLL_SECONDS:-2}
check_number "$WAIT_SECONDS"
command -v curl >/dev/null 2>&1 || die "curl is not installed"

BASE=${MODELHUB_URL%/}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/modelhub-ci.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
BODY=$TMP/body
HEADERS=$TMP/headers
# The token goes to curl in a file, not on its command line (visible in ps).
AUTH_HEADER=$TMP/auth
(
  umask 077
  printf 'Authorization: Bearer %s\n' "$MODELHUB_TOKEN" >"$AUTH_HEADER"
)

case $MODE in
  release)
    [ $# -eq 0 ] || usage
    upload
    deploy "$VERSION"
    promote "$VERSION"
    say "done: $MODEL version $VERSION is loaded and is $MODEL@$ALIAS"
    ;;
  upload)
    [ $# -eq 0 ] || usage
    upload
    ;;
  deploy | promote | rollback)
    [ $# -eq 1 ] || usage
    VERSION=$1
    check_number "$VERSION"
    if [ "$MODE" = deploy ] || [ -n "${SERVER:-}${LABEL:-}" ]; then
      deploy "$VERSION"
    fi
    if [ "$MODE" != deploy ]; then
      promote "$VERSION"
    fi
    ;;
  *) usage ;;
esac
printf '%s\n' "$VERSION"
