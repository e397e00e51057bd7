#!/bin/bash
# Start the TaylorGLO coordinator for Slurm trainers, on a login or service node
# that the compute nodes can reach (it needs no GPU and no TensorFlow):
#
#   docker/slurm/start-coordinator.sh        # in tmux/screen, or as a systemd --user service
#
# The first start creates $TAYLORGLO_HOME (default ~/.taylorglo, mode 700, on a
# file system the compute nodes share) with two random tokens (trainer.token,
# client.token) and a self-signed certificate for this host (server.crt,
# server.key; ca.crt for trainers and clients), unless TAYLORGLO_TLS_CERT and
# TAYLORGLO_TLS_KEY name your site's (then put its CA in $TAYLORGLO_HOME/ca.crt).
# An existing certificate is kept: delete server.crt and server.key to make a new
# one (say, for another host).
# Every start writes coordinator.address, where trainers.sbatch finds it, then
# runs the coordinator in the foreground: SIGTERM or Ctrl-C stops it gracefully,
# and the next start resumes every unfinished search from coordinator.db.
#
# Settings: TAYLORGLO_PORT (50051), TAYLORGLO_LISTEN (0.0.0.0:PORT),
# TAYLORGLO_ADVERTISE (the address trainers dial: $(hostname -f):PORT),
# TAYLORGLO_VENV (a virtual environment with the package; else `taylorglo` on PATH).
set -euo pipefail

home=${TAYLORGLO_HOME:-$HOME/.taylorglo}
port=${TAYLORGLO_PORT:-50051}
listen=${TAYLORGLO_LISTEN:-0.0.0.0:$port}
advertise=${TAYLORGLO_ADVERTISE:-$(hostname -f):$port}
taylorglo=taylorglo
[[ -n ${TAYLORGLO_VENV:-} ]] && taylorglo=$TAYLORGLO_VENV/bin/taylorglo

umask 077  # tokens and keys: readable by this user only
mkdir -p "$home"
chmod 700 "$home"

for role in trainer client; do
  if [[ ! -s $home/$role.token ]]; then
    openssl rand -hex 32 > "$home/$role.token"
    echo "created $home/$role.token"
  fi
done

cert=${TAYLORGLO_TLS_CERT:-$home/server.crt}
key=${TAYLORGLO_TLS_KEY:-$home/server.key}
if [[ ! -s $cert || ! -s $key ]]; then
  host=${advertise%:*}
  # The certificate must name what trainers and clients dial.
  if [[ $host =~ ^[0-9.]+$ ]]; then san="IP:$host"; else san="DNS:$host"; fi
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$host" \
    -addext "subjectAltName=$san,DNS:localhost,IP:127.0.0.1" \
    -keyout "$key" -out "$cert" 2>/dev/null
  cp "$cert" "$home/ca.crt"
  echo "created a self-signed certificate for $host ($cert; trainers and clients trust $home/ca.crt)"
fi

echo "$advertise" > "$home/coordinator.address"
echo "trainers find the coordinator at $advertise ($home/coordinator.address)"
exec "$taylorglo" coordinator --listen "$listen" --db "$home/coordinator.db" \
  --trainer-token-file "$home/trainer.token" --client-token-file "$home/client.token" \
  --tls-cert "$cert" --tls-key "$key"
