#!/usr/bin/env bash
# Provision what the test suite needs, idempotently: Debian packages, a running MariaDB with
# root/'' over TCP and database `test`, and the project venv. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v prometheus >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || need_pkgs+=(prometheus-pushgateway)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
# The instance storage and the celery broker of the distributed tests.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "provision: installing ${need_pkgs[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need_pkgs[@]}" >/dev/null
fi

# Debian starts a Prometheus service on install; the tests start their own on free ports.
mysql_ok() { mariadb -uroot -h127.0.0.1 -P3306 -e "SELECT 1" >/dev/null 2>&1; }
if ! mysql_ok; then
  if ! mariadb -uroot -e "SELECT 1" >/dev/null 2>&1; then
    echo "provision: starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    for _ in $(seq 1 60); do mariadb -uroot -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  # Allow root over TCP with an empty password (test machines only).
  mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;" 2>/dev/null || true
  mariadb -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" 2>/dev/null || true
fi
mariadb -uroot -h127.0.0.1 -P3306 -e "CREATE DATABASE IF NOT EXISTS test" \
  || { echo "provision: MariaDB on 127.0.0.1:3306 is not reachable as root" >&2; exit 1; }

# PostgreSQL on 127.0.0.1:5432 with trust for user postgres over TCP (test-only machines).
pg_ok() { psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1" >/dev/null 2>&1; }
if ! pg_ok; then
  echo "provision: starting PostgreSQL"
  for conf in /etc/postgresql/*/main/pg_hba.conf; do
    [ -f "$conf" ] || continue
    grep -q "^host all all 127.0.0.1/32 trust" "$conf" \
      || sed -i '1i host all all 127.0.0.1/32 trust' "$conf"
  done
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for cluster in /etc/postgresql/*/main; do
      [ -d "$cluster" ] || continue
      version=$(basename "$(dirname "$cluster")")
      pg_ctlcluster "$version" main start 2>/dev/null || pg_ctlcluster "$version" main reload || true
    done
  else
    service postgresql start || true
  fi
  for _ in $(seq 1 60); do pg_ok && break; sleep 0.5; done
  pg_ok || { echo "provision: PostgreSQL on 127.0.0.1:5432 is not reachable as postgres" >&2; exit 1; }
fi

# Redis on 127.0.0.1:6379 (the celery broker).
redis_ok() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_ok; then
  echo "provision: starting Redis"
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes >/dev/null
  for _ in $(seq 1 40); do redis_ok && break; sleep 0.25; done
  redis_ok || { echo "provision: Redis on 127.0.0.1:6379 did not start" >&2; exit 1; }
fi

bash scripts/provision-venv.sh
