-- The in-app inbox: one row per in-app notification (processors/inapp.py writes it,
-- the gateway reads it). The one definition of the inbox.
create table if not exists inbox (
    notification_id text primary key,
    tenant          text,
    recipient       text not null,
    category        text,
    title           text not null,
    body            text not null,
    data            jsonb not null default '{}'::jsonb,
    event_type      text not null,
    created_at      timestamptz not null default now(),
    read_at         timestamptz,
    archived_at     timestamptz
);
create index if not exists inbox_recipient_created_idx on inbox (recipient, tenant, created_at desc);
create index if not exists inbox_unread_idx on inbox (recipient, tenant)
    where read_at is null and archived_at is null;
