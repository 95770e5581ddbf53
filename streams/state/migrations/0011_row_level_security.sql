-- Row-level security for the gateway (docs/api.md#isolation): tenant A's key or token never
-- reads or changes tenant B's rows, enforced by Postgres as well as by the handlers.
--
-- The gateway runs its queries as role `tidings_gateway` (gateway.db_role; `SET ROLE` on
-- each connection) with the tenant of the request in `tidings.tenant`, as 't:<tenant>',
-- set for that one transaction. Not the tables' owner and without BYPASSRLS, the role sees
-- only the rows the policies below let through; with no tenant set it sees none (an unset
-- or reset setting is NULL or '', never 't:…'). The pipeline's stages keep running as the
-- owner, which row-level security does not restrict (they serve every tenant).
--
-- The policies are for PUBLIC, so any other role that is given these tables is held to
-- them too. Creating the role needs CREATEROLE; without it the migration only notes that
-- an administrator must create it (docs/operations.md).
do $$
begin
    if not exists (select from pg_roles where rolname = 'tidings_gateway') then
        begin
            create role tidings_gateway nologin nobypassrls;
        exception when insufficient_privilege then
            raise notice 'tidings: cannot create role tidings_gateway (no CREATEROLE); '
                         'create it as an administrator: docs/operations.md';
        end;
    end if;
    if exists (select from pg_roles where rolname = 'tidings_gateway') then
        execute format('grant tidings_gateway to %I', current_user);
        grant select on recipients, audit_log, api_keys, dead_tokens
            to tidings_gateway;
        grant select, update (read_at, seen_at, archived_at) on inbox to tidings_gateway;
    end if;
end
$$;

alter table recipients enable row level security;
create policy tenant_isolation on recipients
    using (current_setting('tidings.tenant', true) = 't:' || tenant);

alter table inbox enable row level security;
create policy tenant_isolation on inbox
    using (current_setting('tidings.tenant', true) = 't:' || coalesce(tenant, ''))
    with check (current_setting('tidings.tenant', true) = 't:' || coalesce(tenant, ''));

-- On the partitioned parent: the gateway reads the audit log through it (it is granted
-- nothing on the partitions).
alter table audit_log enable row level security;
create policy tenant_isolation on audit_log
    using (current_setting('tidings.tenant', true) = 't:' || coalesce(tenant, ''));
