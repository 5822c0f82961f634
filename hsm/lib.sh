# shellcheck shell=bash
# Variables defined here are used by the scripts that source this file.
# shellcheck disable=SC2034
# Shared helpers for Symbolon's hsm/ operator scripts. Source it, do not run it.
#
# Provides: error/warning output, PKCS#11 module discovery, RFC 7512 URI
# parsing, the common option set (--module/--token/--serial/--pin-file/--uri),
# PIN loading and a pkcs11-tool wrapper that never puts the PIN on a command
# line (pkcs11-tool reads it from an environment variable via `--pin env:VAR`).

if [[ -n "${SYMBOLON_HSM_LIB_LOADED:-}" ]]; then
    return 0
fi
SYMBOLON_HSM_LIB_LOADED=1

PROG=${PROG:-$(basename -- "$0")}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

warn() {
    printf '%s: warning: %s\n' "$PROG" "$*" >&2
}

info() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

need_cmd() {
    command -v "$1" >/dev/null 2>&1 ||
        die "'$1' not found${2:+ ($2)}; run scripts/install-deps"
}

# --- module discovery -------------------------------------------------------

# Well-known SoftHSM2 module locations (Debian/Ubuntu, multiarch, RPM, source).
softhsm_module_candidates() {
    local c
    printf '%s\n' \
        /usr/lib/softhsm/libsofthsm2.so \
        /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
    for c in /usr/lib/*-linux-gnu*/softhsm/libsofthsm2.so; do
        [[ -e "$c" ]] && printf '%s\n' "$c"
    done
    printf '%s\n' \
        /usr/lib64/pkcs11/libsofthsm2.so \
        /usr/lib64/softhsm/libsofthsm2.so \
        /usr/lib/pkcs11/libsofthsm2.so \
        /usr/local/lib/softhsm/libsofthsm2.so
}

# Print the SoftHSM2 module path: $SOFTHSM2_MODULE, else the first existing
# well-known location. Fails with a helpful message when none is found.
find_softhsm_module() {
    local c
    if [[ -n "${SOFTHSM2_MODULE:-}" ]]; then
        [[ -f "$SOFTHSM2_MODULE" ]] ||
            die "SOFTHSM2_MODULE=$SOFTHSM2_MODULE does not exist"
        printf '%s\n' "$SOFTHSM2_MODULE"
        return 0
    fi
    while IFS= read -r c; do
        if [[ -f "$c" ]]; then
            printf '%s\n' "$c"
            return 0
        fi
    done < <(softhsm_module_candidates)
    die "libsofthsm2.so not found (looked in: $(softhsm_module_candidates | tr '\n' ' ')); install softhsm2 (scripts/install-deps) or set SOFTHSM2_MODULE"
}

# --- RFC 7512 helpers -------------------------------------------------------

# Percent-decode $1 (RFC 3986). Rejects malformed escapes and NUL.
pct_decode() {
    local s=$1 out='' hex ch
    while [[ "$s" == *%* ]]; do
        out+=${s%%\%*}
        s=${s#*%}
        hex=${s:0:2}
        [[ "$hex" =~ ^[0-9A-Fa-f]{2}$ ]] || die "bad percent-escape '%$hex' in PKCS#11 URI"
        [[ "$hex" != 00 ]] || die "NUL byte in PKCS#11 URI"
        # shellcheck disable=SC2059 # the format is a fixed \xHH escape
        printf -v ch "\\x$hex"
        out+=$ch
        s=${s:2}
    done
    printf '%s' "$out$s"
}

# Percent-encode $1 for use as an RFC 7512 attribute value. Keeps unreserved
# characters plus ':' and '/', so paths stay readable.
pct_encode() {
    local s=$1 out='' c i
    local LC_ALL=C
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case "$c" in
        [A-Za-z0-9._~/:-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

# Parse an RFC 7512 URI into URI_TOKEN, URI_SERIAL, URI_MODULE, URI_PIN_FILE.
# Supported: path attributes token, serial (others such as manufacturer,
# model, object, type, id are accepted and ignored); query attributes
# module-path and pin-source (file: URI or absolute path). pin-value is
# refused: a PIN does not belong in a URI.
parse_pkcs11_uri() {
    local uri=$1 rest path query attr key val
    URI_TOKEN='' URI_SERIAL='' URI_MODULE='' URI_PIN_FILE=''
    [[ "$uri" == pkcs11:* ]] || die "not a PKCS#11 URI (must start with 'pkcs11:'): $uri"
    rest=${uri#pkcs11:}
    path=${rest%%\?*}
    query=''
    [[ "$rest" == *\?* ]] && query=${rest#*\?}
    local -a parts
    IFS=';' read -r -a parts <<<"$path"
    for attr in "${parts[@]}"; do
        [[ -z "$attr" ]] && continue
        [[ "$attr" == *=* ]] || die "malformed PKCS#11 URI path attribute '$attr'"
        key=${attr%%=*}
        val=$(pct_decode "${attr#*=}")
        case "$key" in
        token) URI_TOKEN=$val ;;
        serial) URI_SERIAL=$val ;;
        slot-id | slot-description | slot-manufacturer)
            die "PKCS#11 URI attribute '$key' is not supported: select the token by 'token' (label) or 'serial'"
            ;;
        *) ;; # library-*, manufacturer, model, object, type, id: not used here
        esac
    done
    IFS='&' read -r -a parts <<<"$query"
    for attr in "${parts[@]}"; do
        [[ -z "$attr" ]] && continue
        [[ "$attr" == *=* ]] || die "malformed PKCS#11 URI query attribute '$attr'"
        key=${attr%%=*}
        val=$(pct_decode "${attr#*=}")
        case "$key" in
        module-path) URI_MODULE=$val ;;
        pin-source)
            case "$val" in
            file://*) val=${val#file://} ;;
            file:*) val=${val#file:} ;;
            /*) ;;
            *) die "unsupported pin-source '$val' (expected file:/absolute/path)" ;;
            esac
            URI_PIN_FILE=$val
            ;;
        pin-value) die "PKCS#11 URI carries pin-value; use pin-source=file:... instead (a PIN must not appear in a URI)" ;;
        module-name) die "module-name is not supported in the URI; use module-path=/path/to/module.so" ;;
        *) warn "ignoring PKCS#11 URI query attribute '$key'" ;;
        esac
    done
}

# Build the URI that Symbolon's configuration takes.
make_pkcs11_uri() { # token module pin_file
    printf 'pkcs11:token=%s?module-path=%s&pin-source=file:%s\n' \
        "$(pct_encode "$1")" "$(pct_encode "$2")" "$(pct_encode "$3")"
}

# --- common options ----------------------------------------------------------

OPT_MODULE='' OPT_TOKEN='' OPT_SERIAL='' OPT_PIN_FILE='' OPT_URI=''

# shellcheck disable=SC2016 # $SOFTHSM2_MODULE is meant literally
COMMON_OPTIONS_HELP='Token selection (explicit options win over --uri, --uri over the environment):
  --uri URI         RFC 7512 URI, e.g. the one hsm/init-softhsm prints:
                    pkcs11:token=symbolon?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/path/user-pin
                    (token, serial, module-path and pin-source=file: are used)
  --module PATH     PKCS#11 module      (env SYMBOLON_PKCS11_MODULE; default: SoftHSM2, found
                    via $SOFTHSM2_MODULE or the usual Debian/RPM paths)
  --token LABEL     token label         (env SYMBOLON_TOKEN; default: symbolon)
  --serial SERIAL   token serial number (instead of or in addition to the label)
  --pin-file FILE   file holding the user PIN (env SYMBOLON_PIN_FILE; in development the
                    PIN may instead come from SYMBOLON_HSM_PIN)
For SoftHSM2, export SOFTHSM2_CONF as printed by hsm/init-softhsm.'

# Try to consume one common option from "$@". Sets SHIFT_BY to the number of
# arguments used (0 if $1 is not a common option).
parse_common_option() {
    SHIFT_BY=0
    local opt=$1 val
    case "$opt" in
    --module | --token | --serial | --pin-file | --uri)
        [[ $# -ge 2 ]] || die "option $opt needs a value"
        val=$2
        SHIFT_BY=2
        ;;
    --module=* | --token=* | --serial=* | --pin-file=* | --uri=*)
        val=${opt#*=}
        opt=${opt%%=*}
        SHIFT_BY=1
        ;;
    *) return 0 ;;
    esac
    [[ -n "$val" ]] || die "option $opt needs a non-empty value"
    case "$opt" in
    --module) OPT_MODULE=$val ;;
    --token) OPT_TOKEN=$val ;;
    --serial) OPT_SERIAL=$val ;;
    --pin-file) OPT_PIN_FILE=$val ;;
    --uri) OPT_URI=$val ;;
    esac
}

# Resolve MODULE, TOKEN, SERIAL, PIN_FILE from options, --uri and environment.
resolve_common_options() {
    URI_TOKEN='' URI_SERIAL='' URI_MODULE='' URI_PIN_FILE=''
    [[ -n "$OPT_URI" ]] && parse_pkcs11_uri "$OPT_URI"

    MODULE=${OPT_MODULE:-${URI_MODULE:-${SYMBOLON_PKCS11_MODULE:-}}}
    if [[ -z "$MODULE" ]]; then
        MODULE=$(find_softhsm_module)
    fi
    [[ -f "$MODULE" ]] || die "PKCS#11 module not found: $MODULE"

    SERIAL=${OPT_SERIAL:-$URI_SERIAL}
    if [[ -n "$OPT_TOKEN" || -n "$URI_TOKEN" ]]; then
        TOKEN=${OPT_TOKEN:-$URI_TOKEN}
    elif [[ -n "$SERIAL" ]]; then
        TOKEN='' # select by serial alone
    else
        TOKEN=${SYMBOLON_TOKEN:-symbolon}
    fi

    PIN_FILE=${OPT_PIN_FILE:-${URI_PIN_FILE:-${SYMBOLON_PIN_FILE:-}}}
}

# --- PIN and pkcs11-tool -----------------------------------------------------

# Load the user PIN into the (unexported) variable HSM_PIN.
load_pin() {
    if [[ -n "$PIN_FILE" ]]; then
        [[ -e "$PIN_FILE" ]] || die "PIN file not found: $PIN_FILE"
        [[ -f "$PIN_FILE" && -r "$PIN_FILE" ]] || die "PIN file is not a readable file: $PIN_FILE"
        HSM_PIN=$(<"$PIN_FILE")
        HSM_PIN=${HSM_PIN%$'\n'}
        HSM_PIN=${HSM_PIN%$'\r'}
        [[ -n "$HSM_PIN" ]] || die "PIN file is empty: $PIN_FILE"
        local perms
        perms=$(stat -c '%a' -- "$PIN_FILE" 2>/dev/null || true)
        if [[ -n "$perms" && "${perms: -1}" != 0 ]]; then
            warn "PIN file $PIN_FILE is readable by other users (mode $perms); chmod 600 it"
        fi
    elif [[ -n "${SYMBOLON_HSM_PIN:-}" ]]; then
        HSM_PIN=$SYMBOLON_HSM_PIN
    else
        die "no user PIN: give --pin-file FILE, a --uri with pin-source=file:..., or set SYMBOLON_PIN_FILE"
    fi
}

# Run pkcs11-tool against MODULE with the PIN passed through the environment
# of that one process only (never on a command line).
p11() {
    SYMBOLON_P11TOOL_PIN=${HSM_PIN:-} pkcs11-tool --module "$MODULE" "$@"
}

# Token selection arguments for pkcs11-tool, in the array SLOT_ARGS.
# pkcs11-tool selects by --token-label; a serial is resolved to its slot id.
select_token() {
    need_cmd pkcs11-tool "package opensc"
    local slots
    if ! slots=$(pkcs11-tool --module "$MODULE" --list-token-slots 2>&1); then
        die "cannot list slots of $MODULE: $slots"
    fi
    local match
    match=$(awk -v want_label="$TOKEN" -v want_serial="$SERIAL" '
        function flush() {
            if (slot != "" && (want_label == "" || label == want_label) &&
                (want_serial == "" || serial == want_serial)) { print slot; n++ }
        }
        /^Slot [0-9]+ \(0x[0-9a-fA-F]+\)/ {
            flush(); slot = $3; gsub(/[():]/, "", slot); label = ""; serial = ""; next
        }
        /^[ \t]+token label[ \t]*:/ { sub(/^[^:]*:[ \t]?/, ""); label = $0; next }
        /^[ \t]+serial num[ \t]*:/  { sub(/^[^:]*:[ \t]?/, ""); serial = $0; next }
        END { flush() }' <<<"$slots")
    local what=token
    [[ -n "$TOKEN" ]] && what+=" labelled \"$TOKEN\""
    [[ -n "$SERIAL" ]] && what+=" with serial \"$SERIAL\""
    if [[ -z "$match" ]]; then
        local hint=''
        if [[ "$MODULE" == *softhsm* ]]; then
            hint=" (SOFTHSM2_CONF=${SOFTHSM2_CONF:-unset, so /etc/softhsm/softhsm2.conf}; export the value hsm/init-softhsm printed)"
        fi
        die "no $what in module $MODULE$hint"
    fi
    if [[ $(wc -l <<<"$match") -gt 1 ]]; then
        die "more than one $what in module $MODULE; select it by --serial"
    fi
    SLOT_ARGS=(--slot "$match")
}

# Run pkcs11-tool logged in as the user on the selected token.
p11_user() {
    p11 "${SLOT_ARGS[@]}" --login --login-type user --pin env:SYMBOLON_P11TOOL_PIN "$@"
}

# Parse `pkcs11-tool --list-objects` output (stdin) into tab-separated lines:
#   class key_type label id sensitive extractable always_sensitive never_extractable local
# class is one of privkey pubkey secrkey cert data other; flags are yes/no,
# or n/a for objects without the attribute (public keys, certificates, data).
parse_object_list() {
    awk '
        function flush() {
            if (class == "") return
            if (class == "privkey" || class == "secrkey") {
                s = ("sensitive" in acc) ? "yes" : "no"
                e = ("extractable" in acc) ? "yes" : "no"
                as = ("always sensitive" in acc) ? "yes" : "no"
                ne = ("never extractable" in acc) ? "yes" : "no"
            } else { s = e = as = ne = "n/a" }
            l = ("local" in acc) ? "yes" : "no"
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", class, ktype, label, id, s, e, as, ne, l
            class = ""
        }
        /^[A-Za-z].* [Oo]bject;?/ {
            flush()
            delete acc; label = ""; id = ""; ktype = "-"
            head = $0
            if (head ~ /^Private Key Object/) class = "privkey"
            else if (head ~ /^Public Key Object/) class = "pubkey"
            else if (head ~ /^Secret Key Object/) class = "secrkey"
            else if (head ~ /^Certificate Object/) class = "cert"
            else if (head ~ /^Data object/) class = "data"
            else class = "other"
            if (head ~ /;/) {
                t = head; sub(/^[^;]*;[ \t]*/, "", t)
                if (class == "secrkey") { sub(/ length .*/, "", t) }
                else if (class == "cert") { sub(/^type = /, "", t) }
                else { sub(/[ \t].*/, "", t) }
                if (t == "Generic secret") t = "GENERIC_SECRET"
                if (t != "") ktype = t
            }
            if (class == "secrkey" && match(head, /length [0-9]+/)) {
                ktype = ktype ":" substr(head, RSTART + 7, RLENGTH - 7)
            }
            if (class == "pubkey" && head ~ /EC_POINT 256 bits/) ktype = ktype ":P-256"
            next
        }
        class != "" && /^[ \t]+label:/ { sub(/^[ \t]+label:[ \t]*/, ""); label = $0; next }
        class != "" && /^[ \t]+ID:/    { sub(/^[ \t]+ID:[ \t]*/, ""); id = $0; next }
        class != "" && /^[ \t]+Access:/ {
            sub(/^[ \t]+Access:[ \t]*/, "")
            n = split($0, a, /,[ \t]*/)
            for (i = 1; i <= n; i++) acc[a[i]] = 1
            next
        }
        END { flush() }'
}

# List the objects on the selected token as parse_object_list records.
# $1: "login" (default) or "nologin" (only public objects are visible then).
list_token_objects() {
    local mode=${1:-login} out err rc=0
    err=$(mktemp)
    if [[ "$mode" == login ]]; then
        out=$(p11_user --list-objects 2>"$err") || rc=$?
    else
        out=$(p11 "${SLOT_ARGS[@]}" --list-objects 2>"$err") || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then
        # pkcs11-tool's own message; it never contains the PIN.
        [[ -z "$out" ]] || printf '%s\n' "$out" >&2
        grep -vE 'CKR_ATTRIBUTE_SENSITIVE|^$' "$err" >&2 || true
        rm -f -- "$err"
        return "$rc"
    fi
    rm -f -- "$err"
    parse_object_list <<<"$out"
}

SYMBOLON_PURPOSES='otp jwt saml data audit pairwise saml-rsa'
SYMBOLON_LABEL_RE='^symbolon-(otp|jwt|saml|data|audit|pairwise|saml-rsa)-[0-9]{8}T[0-9]{6}Z$'
