// Usage texts, kept beside each other so --help stays complete, and the error of a bad command line.
import { VERSION } from './version.ts';

/** A bad command line: the command reports it with its usage text. */
export class UsageError extends Error {}

/**
 * What parseArgs refused, as one line: its first sentence (the rest is Node's advice about
 * positionals starting with '-', which names no command of ours).
 */
export function argsRefusal(e: unknown): string {
  return (e as Error).message.split(/\.\s|\n/)[0]!;
}

export const MAIN_USAGE = `snapnbd ${VERSION}: an NBD server with copy-on-write snapshots

Usage:
  snapnbd serve [options] [IMAGE...]     run the server (see: snapnbd serve --help)
  snapnbd check --data-dir DIR [--repair] verify a store no server has open
  snapnbd volume create|list|info|delete|resize|accept-backing|import ...
  snapnbd snapshot create|list|info|delete|rollback|diff|export ...
  snapnbd clone VOLUME@SNAPSHOT NEWVOLUME
  snapnbd stats
  snapnbd schedule add|list|remove ...   snapshot schedules with retention (see: snapnbd schedule --help)
  snapnbd health [--min-free PERCENT]    exit 0 healthy, 1 degraded, 3 unreachable
  snapnbd console url [--data-dir DIR]   the web console's login link (see serve --http)
  snapnbd backup create|list|restore|verify|delete|prune|cancel|jobs ...  (see: snapnbd backup --help)
  snapnbd --help | --version

The volume, snapshot, clone and stats commands talk to a running server's control socket
(--control PATH, else --data-dir DIR, else $SNAPNBD_CONTROL, else ./data/control.sock).
`;

export const SERVE_USAGE = `Usage: snapnbd serve [options] [IMAGE...]

Serves every volume in the data dir over NBD. Each IMAGE (a raw file) becomes a volume named after
its file name without extension, with the image as its read-only backing file: writes go to the
copy-on-write store, never to the image.

Options:
  --data-dir DIR         where volumes and snapshots live (default ./data)
  --listen ADDR          HOST:PORT, [IPv6]:PORT or unix:/path; repeatable
                         (default 127.0.0.1:10809; port 0 picks a free port)
  --volume NAME=SIZE     create an empty volume if it does not exist (e.g. vm1=20G); repeatable;
                         an existing volume of another size is served as it is (a warning)
  --default-export NAME  the export an empty export name reaches (default: default)
  --control PATH         control socket (default DATA_DIR/control.sock)
  --read-only            serve every export read-only
  --max-connections N    refuse connections beyond N (default 0: unlimited)
  --max-connections-per-client N  refuse more than N connections from one address (default 0:
                         unlimited)
  --memory-budget SIZE   buffered request and reply bytes for all connections together; past it
                         connections stop reading until replies drain (default 512M; 0: none)
  --idle-timeout S       close a connection idle for S seconds (default 0: never)
  --stall-timeout S      close a connection that leaves replies unread for S seconds (default 60)
  --history-interval S   sample each volume's space every S seconds for the console's chart
                         (volume.history; default 300; a day of samples is kept)
  --list-snapshots yes|no  whether NBD_OPT_LIST names VOLUME@SNAPSHOT exports too (default
                         yes); with no, snapshots are still served by name
  --tls off|on|require   STARTTLS: refused, offered, or required before anything else (default
                         require when TLS material is given, else off)
  --tls-cert FILE        server certificate (PEM, chain allowed), with --tls-key FILE
  --tls-ca FILE          clients must present a certificate from this CA (its CN and SAN
                         names are the client's identity); --tls-crl FILE revokes some
  --tls-psk FILE         IDENTITY:HEXKEY lines (psktool); the identity is the client's
  --tls-export PATTERN   with --tls on, exports that need TLS anyway (vm1, web-*, vm1@*)
  --access FILE          JSON rules: which client sees which export, rw or ro
                         (protocol/access.md); SIGHUP reloads them and the TLS files
  --backup-target NAME=URL  a backup target: s3://BUCKET/PREFIX (endpoint, region and credentials
                         the AWS CLI way: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
                         AWS_SECRET_ACCESS_KEY, AWS_PROFILE) or file:///DIR; add
                         ?encrypt=/path/keyfile (32 bytes or 64 hex digits) to encrypt; repeatable
  --log-level LEVEL      error, warn, info or debug (default info)
  --log-format FORMAT    text (default) or json: one JSON object per line
  --config FILE          KEY=VALUE settings re-read on SIGHUP (SNAPNBD_LOG_LEVEL overrides
                         --log-level); the /etc/default/snapnbd format
  --metrics HOST:PORT    serve Prometheus metrics at http://HOST:PORT/metrics
  --http ADDR            serve the web console on HOST:PORT (a loopback address, e.g.
                         127.0.0.1:8080); its login token is DATA_DIR/console.token (mode 0600);
                         HTTPS with the --tls-cert certificate when one is given (then any
                         address is allowed)
  --http-insecure        allow --http on a non-loopback address in plain HTTP
  -h, --help             this text

When the data dir has no volume, a 1 GiB volume named 'default' is created.
When ready, one line per listener goes to stdout ('listening nbd HOST:PORT', 'listening control
PATH', 'listening metrics HOST:PORT', 'listening http(s) HOST:PORT' and the console's login link
'console URL'), then 'ready'. Logs go to stderr. SIGINT/SIGTERM stop gracefully (in-flight
requests finish, data is flushed, exit 0); a second signal exits at once.
SIGHUP reloads what can change without a restart (the --config file's log level, the schedules
from DATA_DIR/schedules.json) and logs it.
`;
