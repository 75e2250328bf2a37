#!/bin/sh
# The chassis of one ipmi_sim BMC, kept as plain files so tests can read and
# change the "hardware" without going through the BMC.
#
# ipmi_sim runs it (through popen) as its `chassis_control` program:
#   ipmi-chassis.sh DIR get power boot     prints "power:0|1" and "boot:<device>"
#   ipmi-chassis.sh DIR set power 1 …      prints nothing on success
# Settings: power 0|1, boot none|pxe|default|cdrom|bios, reset 1,
# shutdown 1 (soft off, taken as off), identify "<seconds> <force>".
# Files in DIR: power, boot, resets, identify, and chassis.log with one line
# "<unix time with ns> <get|set> <arguments>" per call, for timing checks.
dir=$1
op=$2
shift 2
[ -d "$dir" ] || { echo "no chassis directory $dir"; exit 1; }
printf '%s %s %s\n' "$(date +%s.%N)" "$op" "$*" >> "$dir/chassis.log"

read_or() { if [ -f "$1" ]; then cat "$1"; else echo "$2"; fi; }

case $op in
get)
    for name in "$@"; do
        case $name in
        power) echo "power:$(read_or "$dir/power" 0)" ;;
        boot) echo "boot:$(read_or "$dir/boot" none)" ;;
        *) echo "unknown chassis setting: $name"; exit 1 ;;
        esac
    done
    ;;
set)
    while [ $# -ge 2 ]; do
        name=$1
        value=$2
        shift 2
        case $name in
        power) echo "$value" > "$dir/power" ;;
        boot)
            case $value in
            none | pxe | default | cdrom | bios) echo "$value" > "$dir/boot" ;;
            *) echo "unknown boot device: $value"; exit 1 ;;
            esac
            ;;
        reset) echo $(($(read_or "$dir/resets" 0) + 1)) > "$dir/resets" ;;
        shutdown) echo 0 > "$dir/power" ;;
        identify) echo "$value" > "$dir/identify" ;;
        *) echo "unknown chassis setting: $name"; exit 1 ;;
        esac
    done
    ;;
*) echo "unknown operation: $op"; exit 1 ;;
esac
