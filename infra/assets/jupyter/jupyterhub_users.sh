#!/usr/bin/env bash
# Replace JupyterHub's built-in login with the course users. Runs as EMR steps on
# the primary node, where JupyterHub runs in the `jupyterhub` Docker container and
# authenticates users against that container's /etc/shadow (PAM).
#
#   jupyterhub_users.sh lock-default
#       Give the built-in admin `jovyan` (documented password `jupyter`) a random
#       password, lock and expire it, then check /etc/shadow shows it locked.
#   jupyterhub_users.sh create-users REGION USER=SECRET_ARN [USER=SECRET_ARN ...]
#       Create each user (or keep an existing one), set its password from its
#       Secrets Manager secret and register it with the hub.
#
# Passwords travel only through pipes into `docker exec -i` and never appear in
# arguments, the environment of child processes or the step log.
set -euo pipefail
set +x

readonly CONTAINER=jupyterhub
readonly DEFAULT_USER=jovyan
readonly HUB_API=https://127.0.0.1:9443/hub/api
readonly USER_NAME_PATTERN='^[a-z_][a-z0-9_-]{0,31}$'
# The container starts after the applications are installed, which can be just
# before the first step; wait up to CONTAINER_WAIT_SECONDS for it.
readonly CONTAINER_WAIT_SECONDS=${CONTAINER_WAIT_SECONDS:-600}
readonly CONTAINER_POLL_SECONDS=${CONTAINER_POLL_SECONDS:-10}

log() {
    echo "jupyterhub_users: $*" >&2
}

fail() {
    log "error: $*"
    exit 1
}

in_container() {
    sudo docker exec "$CONTAINER" "$@"
}

wait_for_container() {
    local waited=0
    until in_container true >/dev/null 2>&1; do
        if [ "$waited" -ge "$CONTAINER_WAIT_SECONDS" ]; then
            fail "container $CONTAINER not running after ${CONTAINER_WAIT_SECONDS} s;" \
                "check that JupyterHub is one of the cluster's applications"
        fi
        sleep "$CONTAINER_POLL_SECONDS"
        waited=$((waited + CONTAINER_POLL_SECONDS))
    done
}

random_password() {
    # 32 bytes from the kernel's CSPRNG, base64 without padding or line breaks.
    head -c 32 /dev/urandom | base64 | tr -d '\n='
}

user_exists() {
    in_container id -u "$1" >/dev/null 2>&1
}

set_password() {
    local user=$1 password=$2
    printf '%s:%s\n' "$user" "$password" | sudo docker exec -i "$CONTAINER" chpasswd
}

lock_default_user() {
    wait_for_container
    if ! user_exists "$DEFAULT_USER"; then
        log "user $DEFAULT_USER does not exist in $CONTAINER; nothing to lock"
        return 0
    fi
    # A random password first, so the documented one stops working even if a
    # later administrator unlocks the account.
    set_password "$DEFAULT_USER" "$(random_password)"
    in_container usermod --lock "$DEFAULT_USER"
    in_container chage --expiredate 0 "$DEFAULT_USER"
    local hash
    hash=$(in_container getent shadow "$DEFAULT_USER" | cut -d: -f2)
    case "$hash" in
        '!'*) log "user $DEFAULT_USER is locked and expired" ;;
        *) fail "user $DEFAULT_USER is still unlocked after usermod --lock" ;;
    esac
}

read_secret() {
    local region=$1 secret_arn=$2
    aws secretsmanager get-secret-value --region "$region" --secret-id "$secret_arn" \
        --query SecretString --output text
}

# NOTE: the token command and the POST to /hub/api/users follow EMR's documented
# procedure for PAM users, but have been run only against the fakes in the tests.
hub_token() {
    # The hub's own command issues an API token for its admin user. It needs no
    # password, so it works after the default user is locked.
    in_container jupyterhub token "$DEFAULT_USER" 2>/dev/null | tail -n 1
}

register_with_hub() {
    local user=$1 token=$2 status
    # The hub serves EMR's self-signed certificate on loopback, so --insecure
    # skips only the name check of a connection that never leaves this node.
    status=$(printf 'header = "Authorization: token %s"\n' "$token" |
        curl --silent --insecure --config - --output /dev/null --write-out '%{http_code}' \
            --request POST "$HUB_API/users/$user")
    case "$status" in
        201) log "registered $user with the hub" ;;
        409) log "$user is already registered with the hub" ;;
        *) fail "registering $user with the hub failed with HTTP status $status" ;;
    esac
}

create_user() {
    local region=$1 token=$2 pair=$3
    local user=${pair%%=*}
    local secret_arn=${pair#*=}
    if [ "$user" = "$pair" ] || [ -z "$secret_arn" ]; then
        fail "invalid argument '$pair'; expected USER=SECRET_ARN"
    fi
    if ! [[ "$user" =~ $USER_NAME_PATTERN ]]; then
        fail "invalid user name '$user'; expected at most 32 lower-case letters," \
            "digits, '_' or '-'"
    fi
    if [ "$user" = "$DEFAULT_USER" ]; then
        fail "invalid user name '$user': it is the built-in account that lock-default locks"
    fi

    local password
    if ! password=$(read_secret "$region" "$secret_arn") || [ -z "$password" ]; then
        fail "could not read the password of $user from $secret_arn"
    fi
    if user_exists "$user"; then
        log "user $user exists; setting its password"
    else
        in_container useradd --create-home --shell /bin/bash --no-user-group "$user"
        log "created user $user"
    fi
    set_password "$user" "$password"
    register_with_hub "$user" "$token"
}

create_users() {
    if [ "$#" -lt 2 ]; then
        fail "usage: $0 create-users REGION USER=SECRET_ARN [USER=SECRET_ARN ...]"
    fi
    local region=$1
    shift
    wait_for_container

    local token
    token=$(hub_token)
    if [ -z "$token" ]; then
        fail "could not get an API token from the hub (jupyterhub token $DEFAULT_USER)"
    fi
    local pair
    for pair in "$@"; do
        create_user "$region" "$token" "$pair"
    done
}

main() {
    local command=${1:-}
    shift || true
    case "$command" in
        lock-default) lock_default_user ;;
        create-users) create_users "$@" ;;
        *) fail "usage: $0 lock-default | create-users REGION USER=SECRET_ARN ..." ;;
    esac
}

main "$@"
