-- The recipient directory (docs/recipients.md): who a `user:` recipient is, how to reach them,
-- what they opted out of. Materialised from the recipients topic by the `recipients` stage
-- (streams/stages/recipients.py) and bulk-loaded by `tidings recipients import`; read by route
-- once per batch. Deleting a recipient erases its addresses too (a statement trigger).
create table if not exists recipients (
    tenant      text        not null default '',
    id          text        not null,
    email       text,
    phone       text,
    locale      text,
    timezone    text,
    attributes  jsonb       not null default '{}'::jsonb,
    preferences jsonb       not null default '{}'::jsonb,
    -- Where the row came from on the recipients topic: a change is applied only when its
    -- offset is above this (the same key is always on the same partition), so a redelivered
    -- or replayed batch changes nothing. -1: written by an import.
    src_partition integer   not null default -1,
    src_offset  bigint      not null default -1,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (tenant, id)
);

create table if not exists recipient_addresses (
    tenant       text        not null,
    recipient_id text        not null,
    channel      text        not null,  -- push, webpush, slack, webhook
    address      text        not null,  -- device token, subscription JSON, URL
    platform     text,                  -- push: fcm or apns
    app_id       text,
    last_seen    timestamptz,
    position     integer     not null default 0,  -- order within the recipient's list
    -- webpush only: the subscription's endpoint URL, which is what a push service reports
    -- dead (404/410); the dead-token hook deletes by (channel, address) or (channel, endpoint).
    endpoint     text,
    -- Not (…, channel, address): an address may be 4 KiB, more than a btree entry holds
    -- (2704 bytes). The directory writes each (channel, address) once per recipient.
    primary key (tenant, recipient_id, position)
);
-- Deleting a recipient deletes its addresses, whoever deletes it (an erasure by hand too).
-- A statement trigger, not a foreign key: the key's per-row check was 60% of an import's
-- time (docs/recipients.md); the directory (streams/state/directory.py) is the one writer
-- and never writes an address without its recipient.
create or replace function recipients_erase_addresses() returns trigger
language plpgsql as $$
begin
    delete from recipient_addresses a using gone g
     where a.tenant = g.tenant and a.recipient_id = g.id;
    return null;
end
$$;
drop trigger if exists recipients_erase_addresses on recipients;
create trigger recipients_erase_addresses after delete on recipients
    referencing old table as gone for each statement
    execute function recipients_erase_addresses();
-- Dead tokens are reported by address: find its rows without knowing the recipient. Hash
-- indexes, for the same reason as the primary key (and equality is all they answer).
create index if not exists recipient_addresses_address_idx
    on recipient_addresses using hash (address);
create index if not exists recipient_addresses_endpoint_idx
    on recipient_addresses using hash (endpoint) where endpoint is not null;

-- Defaults under every recipient's own preferences, and the categories a tenant requires
-- (a required category, like `security`, ignores opt-outs).
create table if not exists tenant_preferences (
    tenant      text        primary key,
    preferences jsonb       not null default '{}'::jsonb,
    required_categories text[] not null default '{}',
    updated_at  timestamptz not null default now()
);
