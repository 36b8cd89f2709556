# bash completion for clip(1): commands, and each command's options.
#
# Both are read from the binary being completed: the commands from the
# "commands:" lines of `clip --help`, a command's options from the option
# lines of `clip COMMAND --help` (an indented line starting with '-', up to
# two spaces; tests/check-docs holds the man pages to the same lines). So a
# new command or option completes without a change here. Each command's help
# is read once per shell. Anything else (operands, option arguments) is
# completed as file names.
#
# Needs nothing from the bash-completion package; installed where it loads
# completions on demand (share/bash-completion/completions/clip).

declare -gA _clip_cache

# _clip_help CLIP [COMMAND]: the --help text, cached.
_clip_help() {
	local key="$1 $2"
	if [[ -z ${_clip_cache[$key]+set} ]]; then
		_clip_cache[$key]=$("$1" ${2:+"$2"} --help 2>/dev/null)
	fi
	printf '%s\n' "${_clip_cache[$key]}"
}

# _clip_commands CLIP: one command a line.
_clip_commands() {
	_clip_help "$1" | awk '/^commands:$/ { inside = 1; next }
		inside && NF == 0 { exit }
		inside { print $1 }'
}

# _clip_options CLIP COMMAND: the options of its option lines, one a line
# (COMMAND empty: clip's own).
_clip_options() {
	_clip_help "$1" "$2" | awk '/^[ \t]+-/ {
		sub(/^[ \t]+/, "")
		sub(/  .*/, "")
		n = split($0, words, /,? /)
		for (i = 1; i <= n; i++)
			if (words[i] ~ /^-/)
				print words[i]
	}'
}

_clip() {
	local clip=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]}
	local command='' i
	COMPREPLY=()
	# clip as typed (./build/clip) when it runs, else the one on PATH.
	[[ $clip == */* && -x $clip ]] || clip=$(type -P clip) || return 0
	for ((i = 1; i < COMP_CWORD; i++)); do
		if [[ ${COMP_WORDS[i]} != -* ]]; then
			command=${COMP_WORDS[i]}
			break
		fi
	done
	if [[ -z $command ]]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$(_clip_options "$clip" '')" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$(_clip_commands "$clip")" -- "$cur"))
		fi
		return 0
	fi
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_clip_options "$clip" "$command")" -- "$cur"))
	fi
	return 0
}

complete -o default -F _clip clip
