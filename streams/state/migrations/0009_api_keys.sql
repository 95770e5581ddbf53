-- API keys of the gateway (docs/api.md): one row per key, the secret stored as its SHA-256
-- only (a key is `tdk_<prefix>_<secret>`: the prefix finds the row, the secret is shown once,
-- when `tidings apikeys create` makes it). Scopes say what the key may do.
create table if not exists api_keys (
    prefix      text        primary key,
    tenant      text        not null,
    name        text        not null default '',
    scopes      text[]      not null,
    secret_sha256 bytea     not null,
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz
);
create index if not exists api_keys_tenant_idx on api_keys (tenant);
