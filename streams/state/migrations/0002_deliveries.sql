-- Durable record of every send a provider accepted: the dedup backstop when
-- Redis has lost its claims. Written before a message's offset is committed.
create table deliveries (
    notification_id     uuid        primary key,
    channel             text        not null,
    provider            text        not null,
    provider_message_id text,
    attempt             integer     not null default 1,
    sent_at             timestamptz not null default now()
);
create index deliveries_sent_at on deliveries (sent_at);
