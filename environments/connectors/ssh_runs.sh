# PowerAutomation's remote run supervisor (issue 16). POSIX sh only: dash, busybox sh, bash,
# macOS sh; nothing to install on the machine. environments/connectors/ssh_runs.py sends it
# whole, as `sh -c '<this>' pa-run ACTION BASE RUN_ID [ARGS...]`, every value shell-quoted.
#
# One directory per run, BASE/RUN_ID, holds:
#   pid        "PID PGID" of the supervisor (PGID "-" when no own process group could be had)
#   output     the script's stdout and stderr, appended as it writes them
#   exit_code  the script's exit status, written once it ended (tmp file + mv: never partial)
#   detached_by  how it got its own session: setsid, perl, or session (sshd's, see start)
#   stopped    the signal that stopped it (TERM or KILL), written by `stop`
# `mkdir` of that directory is the claim: a run whose directory exists is never started again.
#
# Answers (but clean_stale's, one removed run id a line) carry the run's state on one line,
# after start's started|already_started line: STATUS EXIT_CODE PID PGID OUTPUT_BYTES ("-" = unknown).
umask 077
action=$1 base=$2 id=$3 sized=1
shift 3
case $base in
"~") base=$HOME ;;
"~/"*) base=$HOME/${base#"~/"} ;;
esac
case $id in
"" | .* | */*) echo "error - - - -"; exit 2 ;;
esac
dir=$base/$id

nap() { sleep "${1:-0.1}" 2>/dev/null || sleep 1; }

# Processes of the group that are not zombies (a zombie answers kill -0 until reaped).
group_left() {
    kill -0 "-$1" 2>/dev/null || { echo 0; return; }
    if ps -A -o pgid= >/dev/null 2>&1; then
        echo $(($(ps -A -o pgid= -o stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/' | wc -l)))
    else
        echo 1
    fi
}

# A live process: kill -0 also answers for a zombie not reaped yet. /proc (Linux) tells them
# apart without starting a process; elsewhere ps does (`ps -A -o`, not -p, which busybox lacks).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        read -r _ _ state _ 2>/dev/null <"/proc/$1/stat" || return 1
        [ "$state" != Z ]
        return
    fi
    case $(ps -A -o pid= -o stat= 2>/dev/null | awk -v p="$1" '$1 == p { print $2 }') in Z*) return 1 ;; esac
}

# The run's state line; its first word is also left in $status. The output's size costs a
# process (wc) and is left out ("-") where the answer does not need it.
header() {
    if [ ! -d "$dir" ]; then status=not_started; echo "not_started - - - 0"; return; fi
    size=-
    [ "$sized" = 1 ] && [ -f "$dir/output" ] && size=$(($(wc -c <"$dir/output")))
    pid=- pgid=-
    [ -f "$dir/pid" ] && read -r pid pgid <"$dir/pid"
    if [ -f "$dir/exit_code" ]; then
        read -r code <"$dir/exit_code"
        status=ended
        echo "ended $code $pid ${pgid:--} $size"
    elif [ "$pid" = - ]; then
        status=starting
        echo "starting - - - $size"
    elif alive "$pid"; then
        status=running
        echo "running - $pid ${pgid:--} $size"
    elif [ -f "$dir/exit_code" ]; then
        header  # it ended between the two looks
    else
        status=vanished
        echo "vanished - $pid ${pgid:--} $size"
    fi
}

# Start the command detached from this session: its own session and process group, HUP
# ignored, no file descriptor of the SSH channel kept. setsid(1) is util-linux and busybox;
# macOS has none, but has perl, whose POSIX::setsid does the same. Without either, the run
# stays in the group sshd made for this session (OpenSSH calls setsid() for every command
# run without a pty), which outlives the session too; its PGID is read with ps.
start() {
    sized=0 # a new run has written nothing yet; a found one is followed from its offset
    [ -d "$base" ] || mkdir -p "$base" || { echo "error - - - 0"; exit 3; }
    if ! mkdir "$dir" 2>/dev/null; then
        if [ -d "$dir" ]; then echo already_started; header; exit 0; fi
        echo "error - - - 0"; exit 3
    fi
    : >"$dir/output"
    own=1
    if command -v setsid >/dev/null 2>&1; then
        echo setsid >"$dir/detached_by"
        setsid sh -c "$1" pa-run supervise "$base" "$id" "$2" 1 </dev/null >/dev/null 2>&1 &
    elif command -v perl >/dev/null 2>&1; then
        echo perl >"$dir/detached_by"
        perl -MPOSIX -e 'POSIX::setsid(); exec @ARGV or exit 127' -- \
            sh -c "$1" pa-run supervise "$base" "$id" "$2" 1 </dev/null >/dev/null 2>&1 &
    else
        echo session >"$dir/detached_by"
        sh -c "$1" pa-run supervise "$base" "$id" "$2" 0 </dev/null >/dev/null 2>&1 &
        own=0
    fi
    if [ $own = 1 ]; then
        # setsid(1) and perl's setsid() keep their pid (a background job leads no group, so
        # setsid(1) does not fork) and make it the group's: known now, no need to wait.
        printf '%s %s\n' $! $! >"$dir/pid.start" && mv -f "$dir/pid.start" "$dir/pid"
    fi
    i=0
    while [ ! -f "$dir/pid" ] && [ $i -lt 250 ]; do nap 0.02; i=$((i + 1)); done
    echo started
    header
    # Old run directories go in the background: the answer does not wait for them.
    [ -n "$3" ] && [ "$3" != - ] && (clean_stale "$3" </dev/null >/dev/null 2>&1 &)
    # Asked to follow (SECONDS LIMIT): the same session streams the new run's output, one
    # session less than a start and then a follow.
    [ -n "$4" ] && follow 0 "$4" "$5"
    return 0
}

# The detached supervisor: records its pid, runs the command, records the exit code. It
# survives TERM (a trap) so that a stop's TERM still leaves the script's own exit status.
supervise() {
    trap '' HUP
    trap 'stopping=1' TERM
    pgid=$$
    if [ "$2" != 1 ]; then
        pgid=$(ps -A -o pid= -o pgid= 2>/dev/null | awk -v p=$$ '$1 == p { print $2 }')
        [ -n "$pgid" ] || pgid=-
    fi
    # start wrote it already when it knew the pid (setsid, perl)
    [ -f "$dir/pid" ] || { printf '%s %s\n' $$ "$pgid" >"$dir/pid.tmp" && mv -f "$dir/pid.tmp" "$dir/pid"; }
    # The script is this shell's child, so its end is reaped at once: a follower waits for
    # its pid (the supervisor itself, an orphan, may stay a zombie until init reaps it).
    sh -c "$1" </dev/null >>"$dir/output" 2>&1 &
    child=$!
    # Written in place (a process less than tmp + mv): a follower that reads it half
    # written finds no number and looks every 0.1 s instead of streaming.
    printf '%s\n' $child >"$dir/child"
    while :; do
        wait $child
        code=$?
        alive $child || break # else a trapped TERM interrupted the wait
    done
    printf '%s\n' $code >"$dir/exit_code.tmp" && mv -f "$dir/exit_code.tmp" "$dir/exit_code"
}

# TERM the whole group, KILL it after GRACE seconds, then check that nothing of it is left.
stop() {
    header
    [ -f "$dir/pid" ] || { echo "none 0"; return; }
    read -r pid pgid <"$dir/pid"
    if [ "$pgid" = - ]; then group=$pid; else group=-$pgid; fi
    kill -TERM "$group" 2>/dev/null
    signal=TERM i=0
    while [ "$(group_left "${group#-}")" != 0 ] && [ $i -lt $(($1 * 10)) ]; do nap; i=$((i + 1)); done
    if [ "$(group_left "${group#-}")" != 0 ]; then
        kill -KILL "$group" 2>/dev/null
        signal=KILL i=0
        while [ "$(group_left "${group#-}")" != 0 ] && [ $i -lt 30 ]; do nap; i=$((i + 1)); done
    fi
    printf '%s\n' $signal >"$dir/stopped"
    echo "$signal $(group_left "${group#-}")"
}

# Output bytes after OFFSET, at most LIMIT of them, after the header line.
output() {
    header
    [ -f "$dir/output" ] || return 0
    tail -c +$(($1 + 1)) "$dir/output" | head -c "$2"
}

# Stream the output after OFFSET as it is written until the run ended, its supervisor
# vanished, SECONDS passed or LIMIT bytes went out; then the state.
# With GNU tail and timeout (most Linux machines) the first line is "stream": then the
# bytes as tail -f hands them on, and the state line on stderr. tail waits on inotify and
# ends when the supervisor's pid does: nothing is started while the script runs, which
# matters when one machine follows hundreds of runs. Elsewhere the first line is "frames":
# a look every 0.1 s, frames "data N" + N bytes, then the state line.
follow() {
    sized=1 # the caller compares what it read with the size
    gnu=0 child=
    [ -f "$dir/child" ] && read -r child <"$dir/child"
    case $child in "" | *[!0-9]*) ;; *)
        if [ ! -f "$dir/exit_code" ] && command -v timeout >/dev/null 2>&1; then
            case $(tail --version 2>/dev/null) in *GNU*) gnu=1 ;; esac
        fi
        ;;
    esac
    if [ $gnu = 1 ]; then
        echo stream
        # No `head -c LIMIT`: it holds its output in stdio's buffer. The caller ends the call.
        timeout "$2" tail -s 0.1 --pid="$child" -c +$(($1 + 1)) -f "$dir/output"
        # The script ended: its supervisor writes the exit code a moment later.
        i=0
        while [ ! -f "$dir/exit_code" ] && ! kill -0 "$child" 2>/dev/null && [ $i -lt 50 ]; do
            nap 0.01
            i=$((i + 1))
        done
        header >&2
        return 0
    fi
    echo frames
    off=$1 sent=0 i=0
    pid=-
    while [ -d "$dir" ]; do
        done=0
        [ -f "$dir/exit_code" ] && done=1
        [ $i -ge $(($2 * 10)) ] && done=1
        if [ $((i % 10)) = 9 ] && [ -f "$dir/pid" ]; then
            read -r pid pgid <"$dir/pid"
            kill -0 "$pid" 2>/dev/null || done=1
        fi
        size=$(($(wc -c <"$dir/output")))
        n=$((size - off))
        [ $n -gt $(($3 - sent)) ] && n=$(($3 - sent))
        if [ $n -gt 0 ]; then
            echo "data $n"
            tail -c +$((off + 1)) "$dir/output" | head -c $n
            off=$((off + n)) sent=$((sent + n))
        fi
        [ $done = 1 ] || [ $sent -ge $3 ] && break
        nap
        i=$((i + 1))
    done
    header
}

cleanup() {
    sized=0
    header
    [ "$status" = running ] || rm -rf "$dir"
}

# Remove run directories untouched for more than DAYS days, except running ones.
clean_stale() {
    [ -d "$base" ] && cd "$base" || return 0
    set -f
    for name in $(find . ! -name . -prune -type d -mtime +"$1" 2>/dev/null); do
        id=${name#./}
        case $id in "" | .* | *[!A-Za-z0-9._-]*) continue ;; esac
        dir=$base/$id
        case $(header) in running*) continue ;; esac
        rm -rf "$dir" && echo "$id"
    done
}

case $action in
start) start "$@" ;;
supervise) supervise "$@" ;;
state) header ;;
output) output "$@" ;;
follow) follow "$@" ;;
stop) stop "$@" ;;
cleanup) cleanup ;;
clean_stale) clean_stale "$@" ;;
*) echo "error - - - -"; exit 2 ;;
esac
