-- Dead device tokens and push subscriptions: FCM UNREGISTERED, APNs 410, Web Push 404/410.
-- Written by processors/deadtoken_store.py (PostgresDeadTokens); read by the recipient directory,
-- which stops sending to these addresses. One row per (channel, token): a token reported again
-- keeps its first_seen_at and moves last_seen_at.
create table if not exists dead_tokens (
    channel         text        not null,
    token           text        not null,  -- device token, or the Web Push endpoint URL
    recipient       text        not null,
    provider        text        not null,
    reason          text        not null,
    notification_id uuid,                  -- the send that found it dead (null: not a uuid)
    first_seen_at   timestamptz not null default now(),
    last_seen_at    timestamptz not null default now(),
    primary key (channel, token)
);
create index if not exists dead_tokens_recipient_idx on dead_tokens (recipient, channel);
