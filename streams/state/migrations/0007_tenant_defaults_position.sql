-- A tenant's defaults can come from the recipients topic (`tidings.tenant.defaults`
-- records): like a recipient row, the row keeps the topic position it was last written from,
-- so a replayed older record never overwrites a newer one (docs/recipients.md). -1: written
-- directly (`tidings tenants defaults` without --publish), which keeps the position.
alter table tenant_preferences
    add column if not exists src_partition integer not null default -1,
    add column if not exists src_offset bigint not null default -1;
