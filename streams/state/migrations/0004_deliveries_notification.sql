-- The dispatch record (Notification JSON) of each accepted send, so a provider
-- receipt (e.g. a Twilio status callback) can be turned into a complete status
-- event by notification id alone, even before the audit stage has caught up.
-- Nullable and without a default: adding it rewrites nothing; older rows stay NULL.
alter table deliveries add column if not exists notification bytea;
