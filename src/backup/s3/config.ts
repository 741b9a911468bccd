// Where the S3 client's endpoint, region and credentials come from: the AWS CLI's rules, so a
// user who already runs `aws s3` needs nothing new. Environment first (AWS_ENDPOINT_URL_S3,
// AWS_ENDPOINT_URL, AWS_REGION/AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/
// AWS_SESSION_TOKEN), then the profile (AWS_PROFILE, default "default") in
// ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE) and ~/.aws/config (AWS_CONFIG_FILE).
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BackupError, BackupErrorCode } from '../errors.ts';
import type { Credentials } from './sigv4.ts';

export const DEFAULT_REGION = 'us-east-1';

export interface S3Config {
  endpoint: URL;
  region: string;
  credentials: Credentials;
}

/** A minimal INI reader: `[section]` and `key = value` lines, `#`/`;` comments. */
export function parseIni(text: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let cur: Map<string, string> | null = null;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[\s*(.+?)\s*\]$/.exec(line);
    if (sec) {
      cur = new Map();
      out.set(sec[1]!, cur);
      continue;
    }
    const kv = /^([^=]+?)\s*=\s*(.*)$/.exec(line);
    if (kv && cur) cur.set(kv[1]!.toLowerCase(), kv[2]!);
  }
  return out;
}

function readIni(path: string): Map<string, Map<string, string>> {
  try {
    return parseIni(readFileSync(path, 'utf8'));
  } catch {
    return new Map();
  }
}

export function resolveS3Config(env: NodeJS.ProcessEnv = process.env): S3Config {
  const profile = env.AWS_PROFILE || env.AWS_DEFAULT_PROFILE || 'default';
  const home = env.HOME || homedir();
  const creds = readIni(env.AWS_SHARED_CREDENTIALS_FILE || join(home, '.aws', 'credentials')).get(profile);
  const cfgFile = readIni(env.AWS_CONFIG_FILE || join(home, '.aws', 'config'));
  const cfg = cfgFile.get(profile === 'default' ? 'default' : `profile ${profile}`);
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || cfg?.get('region') || DEFAULT_REGION;
  const accessKeyId = env.AWS_ACCESS_KEY_ID || creds?.get('aws_access_key_id') || cfg?.get('aws_access_key_id');
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY || creds?.get('aws_secret_access_key') || cfg?.get('aws_secret_access_key');
  const sessionToken = env.AWS_SESSION_TOKEN || creds?.get('aws_session_token') || cfg?.get('aws_session_token');
  if (!accessKeyId || !secretAccessKey) {
    throw new BackupError(BackupErrorCode.TargetDenied,
      `no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile '${profile}' in ~/.aws/credentials`);
  }
  const endpointText = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || cfg?.get('endpoint_url') || `https://s3.${region}.amazonaws.com`;
  let endpoint: URL;
  try {
    endpoint = new URL(endpointText);
  } catch {
    throw new BackupError(BackupErrorCode.InvalidTarget, `S3 endpoint '${endpointText}' is not a URL`);
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
    throw new BackupError(BackupErrorCode.InvalidTarget, `S3 endpoint '${endpoint.origin}' is not http or https`);
  }
  return { endpoint, region, credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } };
}
