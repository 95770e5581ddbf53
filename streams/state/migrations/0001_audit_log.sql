-- The audit log: one row per status change of a notification.
-- Partitioned by month of the source event's time, which is fixed for a
-- notification, so (notification_id, status, attempt, event_at) is unique
-- exactly when (notification_id, status, attempt) is: replays add no rows.
create table audit_log (
    notification_id   uuid        not null,
    status            text        not null,
    attempt           integer     not null,
    event_at          timestamptz not null,
    status_at         timestamptz not null,
    status_event_id   uuid        not null,
    source_event_id   text        not null,
    source_event_type text        not null,
    tenant            text,
    rule_id           text        not null,
    rule_version      integer     not null,
    template_id       text        not null,
    template_version  text        not null,
    catalog_version   text        not null,
    channel           text        not null,
    recipient_id      text        not null,
    provider          text,
    provider_message_id text,
    error_code        text,
    error_message     text,
    recorded_at       timestamptz not null default now(),
    primary key (notification_id, status, attempt, event_at)
) partition by range (event_at);

create index audit_log_source_event on audit_log (source_event_id);
create index audit_log_recipient on audit_log (recipient_id, event_at);
