# genv's shell integration for fish: genv shell --init fish | source
# Every value genv prints for this script to source is single-quoted; the
# variable names below are genv's own constants, never user input.

# Sets a variable, remembering its value (or that it was unset) the first
# time, so that deactivation restores exactly what was there.
function __genv_set --description 'genv: set a variable'
    __genv_remember $argv[1]
    set -gx $argv[1] $argv[2..-1]
end

function __genv_unset --description 'genv: unset a variable'
    __genv_remember $argv[1]
    set -e $argv[1]
end

function __genv_remember --argument-names name
    if not contains -- $name $__genv_envs
        if set -q $name
            set -g __genv_backup_$name $$name
        end
        set -g __genv_envs $__genv_envs $name
    end
end

function __genv_restore --description 'genv: restore what activation changed'
    for name in $__genv_envs
        set -l backup __genv_backup_$name
        if set -q $backup
            set -gx $name $$backup
            set -e $backup
        else
            set -e $name
        end
    end
    set -e __genv_envs
    if functions -q __genv_fish_prompt
        functions -e fish_prompt
        functions -c __genv_fish_prompt fish_prompt
        functions -e __genv_fish_prompt
    end
end

# Puts genv's memory cap library first in LD_PRELOAD, ahead of what
# LD_PRELOAD held before activation; without an argument, puts that back.
function __genv_preload --description 'genv: the memory cap library in LD_PRELOAD'
    __genv_remember LD_PRELOAD
    if set -q argv[1]
        if test -n "$__genv_backup_LD_PRELOAD"
            set -gx LD_PRELOAD "$argv[1]:$__genv_backup_LD_PRELOAD"
        else
            set -gx LD_PRELOAD $argv[1]
        end
    else if set -q __genv_backup_LD_PRELOAD
        set -gx LD_PRELOAD $__genv_backup_LD_PRELOAD
    else
        set -e LD_PRELOAD
    end
end

function __genv_prompt_on --description 'genv: prefix the prompt with (genv)'
    if functions -q fish_prompt; and not functions -q __genv_fish_prompt
        functions -c fish_prompt __genv_fish_prompt
        function fish_prompt
            printf '(genv) '
            __genv_fish_prompt
        end
    end
end

function genv --description 'GPU environments' --wraps genv
    switch "$argv[1]"
        case activate deactivate
            # Help is read, not evaluated.
            if contains -- --help $argv[2..-1]; or contains -- -h $argv[2..-1]
                command genv $argv
                return
            end
            set -l code (command genv $argv[1] --shell $fish_pid $argv[2..-1])
            or return
            string join \n -- $code | source
        case config
            command genv $argv
            or return
            command genv shell --reconfigure fish | source
        case attach detach
            command genv $argv
            or return
            command genv shell --reattach fish | source
        case shell
            if test (count $argv) -eq 1
                command genv shell --ok
            else
                command genv $argv
            end
        case '*'
            command genv $argv
    end
end

if test "$GENV_PREACTIVATE" = 1; and not set -q GENV_ENVIRONMENT_ID
    set -l code (command genv activate --shell $fish_pid --preactivate)
    and string join \n -- $code | source
end
