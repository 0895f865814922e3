# shellcheck shell=bash
# genv's shell integration for bash and zsh: eval "$(genv shell --init)".
# Every value genv prints for this script to eval is single-quoted; the
# variable names below are genv's own constants, never user input.

# Sets a variable, remembering its value (or that it was unset) the first
# time, so that deactivation restores exactly what was there.
__genv_set() {
  __genv_remember "$1"
  eval "$1=\"\$2\""
  if [[ "$1" != PS1 ]]; then
    export "${1?}"
  fi
}

__genv_unset() {
  __genv_remember "$1"
  unset "$1"
}

__genv_remember() {
  case ":${GENV_ENVS-}:" in
  *":$1:"*) ;;
  *)
    if eval "[[ -n \"\${$1+x}\" ]]"; then
      eval "__genv_backup_$1=\"\${$1}\""
    fi
    GENV_ENVS="${GENV_ENVS:+$GENV_ENVS:}$1"
    ;;
  esac
}

__genv_restore() {
  local __genv_rest="${GENV_ENVS-}" __genv_name
  while [[ -n "$__genv_rest" ]]; do
    __genv_name="${__genv_rest%%:*}"
    case "$__genv_rest" in
    *:*) __genv_rest="${__genv_rest#*:}" ;;
    *) __genv_rest="" ;;
    esac
    if eval "[[ -n \"\${__genv_backup_$__genv_name+x}\" ]]"; then
      eval "$__genv_name=\"\${__genv_backup_$__genv_name}\""
      unset "__genv_backup_$__genv_name"
    else
      unset "$__genv_name"
    fi
  done
  unset GENV_ENVS
}

# Puts genv's memory cap library ($1) first in LD_PRELOAD, ahead of what
# LD_PRELOAD held before activation; without an argument, puts that back.
__genv_preload() {
  __genv_remember LD_PRELOAD
  if [[ -n "${1-}" ]]; then
    export LD_PRELOAD="$1${__genv_backup_LD_PRELOAD:+:$__genv_backup_LD_PRELOAD}"
  elif [[ -n "${__genv_backup_LD_PRELOAD+x}" ]]; then
    export LD_PRELOAD="$__genv_backup_LD_PRELOAD"
  else
    unset LD_PRELOAD
  fi
}

genv() {
  local __genv_code
  case "${1-}" in
  activate | deactivate)
    # Help is read, not evaluated.
    for __genv_code in "${@:2}"; do
      case "$__genv_code" in
      -h | --help)
        command genv "$@"
        return
        ;;
      *) ;;
      esac
    done
    __genv_code="$(command genv "$1" --shell "$$" "${@:2}")" || return
    eval "$__genv_code"
    ;;
  config)
    command genv "$@" || return
    __genv_code="$(command genv shell --reconfigure @SHELL@)" || return
    eval "$__genv_code"
    ;;
  attach | detach)
    command genv "$@" || return
    __genv_code="$(command genv shell --reattach @SHELL@)" || return
    eval "$__genv_code"
    ;;
  shell)
    if [[ "$#" -eq 1 ]]; then
      command genv shell --ok
    else
      command genv "$@"
    fi
    ;;
  *)
    command genv "$@"
    ;;
  esac
}

if [[ "${GENV_PREACTIVATE-}" = 1 && -z "${GENV_ENVIRONMENT_ID-}" ]]; then
  __genv_code="$(command genv activate --shell "$$" --preactivate)" && eval "$__genv_code"
  unset __genv_code
fi
