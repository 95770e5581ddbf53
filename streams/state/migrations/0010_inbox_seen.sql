-- The inbox's `seen` state (the gateway's inbox API, docs/api.md): an entry is seen when the
-- recipient's app showed it (a feed opened), read when the recipient opened it. Unseen
-- counts come from this index, like unread ones from inbox_unread_idx.
alter table inbox add column if not exists seen_at timestamptz;
create index if not exists inbox_unseen_idx on inbox (recipient, tenant)
    where seen_at is null and archived_at is null;
