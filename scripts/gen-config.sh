#!/usr/bin/env bash
# Writes a generated config of N resources to stdout, for measuring how long a config
# takes to load (docs/performance.md, "Loading a config"). Each resource is a model with
# a field read from the token and an access rule, like the shipped resources.yaml
# (100,000 of them make 13 MB, under the 16 MiB a config file may hold). SHAPE says how
# the patterns differ:
#   spread  app<i>.model.{cid}    (each pattern its own first part; the default)
#   shared  app.model<i>.{cid}    (every pattern under one first part)
#   mixed   app<i>.model.{cid} and {tenant}.list<i>.{cid} in turn (half of them start
#           with a capture)
#
#   scripts/gen-config.sh 100000 > /tmp/100k.yaml
#   scripts/gen-config.sh 100000 shared > /tmp/100k-shared.yaml
#   time target/release/connres check --config /tmp/100k.yaml > /dev/null
set -euo pipefail
n=${1:?usage: gen-config.sh N [spread|shared|mixed]}
shape=${2:-spread}
case "$shape" in
  spread) fmt='  app%d.model.{cid}:\n' ;;
  shared) fmt='  app.model%d.{cid}:\n' ;;
  mixed) fmt='  app%d.model.{cid}:\n'; alt='  "{tenant}.list%d.{cid}":\n' ;;
  *) echo "unknown shape $shape (spread, shared or mixed)" >&2; exit 2 ;;
esac
awk -v n="$n" -v fmt="$fmt" -v alt="${alt:-$fmt}" 'BEGIN {
  print "version: 1"
  print "resources:"
  for (i = 0; i < n; i++) {
    printf (i % 2 ? alt : fmt), i
    print "    fields:"
    print "      name: { type: string, from: \"{{token.name}}\" }"
    print "    access:"
    print "      get: cid == params.cid"
  }
}'
