#!/usr/bin/env bash
# Makes ./tls for docker-compose.tls.yml with peerd's own certificate generator (peerd auth
# certs): a CA, one certificate per peerd node, one for the etcd members, the client
# certificates root (etcd's admin), peerd (the nodes' etcd user) and admin (you), an admin
# token and the auth policy naming both. See docs/docker-compose.md ("TLS").
#
#   bash scripts/compose-tls.sh [DIR]     # DIR defaults to ./tls; an existing CA is reused
#
# The key files are made readable by the containers' users (peerd runs as uid 10001): fine for
# a throw-away setup; in production mount secrets owned by the user that reads them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-tls}
peerd=${PEERD:-$( [ -x .venv/bin/peerd ] && echo .venv/bin/peerd || echo peerd )}

$peerd auth certs "$out" --days 90 \
  --node peerd1 --node peerd2 --node peerd3 \
  --server-cert etcd=etcd1,etcd2,etcd3 \
  --client root --client peerd --client admin
hashed=$($peerd auth hash-token)
token=$(sed -n 's/^token: *//p' <<<"$hashed")
digest=$(sed -n 's/^token_sha256: *"\(.*\)"/\1/p' <<<"$hashed")
umask 077
printf '%s\n' "$token" > "$out/admin.token"
umask 022
cat > "$out/auth-policy.toml" <<POLICY
# docker-compose.tls.yml: the admin client certificate and the token in admin.token are admins.
# Add principals for people and jobs (docs/security.md); nodes re-read this file on SIGHUP.
[[principals]]
name = "admin"
token_sha256 = ["$digest"]
certificate = ["admin"]
grants = [{ role = "admin", tasks = ["*"] }]
POLICY
for f in "$out"/*.pem; do
  [ "$(basename "$f")" = ca-key.pem ] || chmod a+r "$f"   # the CA key stays yours alone
done
abs=$(cd "$out" && pwd)
echo
echo "export PEERD_SERVER=127.0.0.1:7070"
echo "export PEERD_CA=$abs/ca.pem"
echo "export PEERD_CERT=$abs/admin.pem"
echo "export PEERD_KEY=$abs/admin-key.pem"
echo "export PEERD_TOKEN=\$(cat $abs/admin.token)"
