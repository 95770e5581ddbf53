-- A recipient's addresses move into its row (docs/decisions/0012-inline-addresses.md): one
-- heap row and one primary-key entry per recipient instead of 2.5 rows and 4 index entries,
-- which was most of an import's Postgres time. `addresses`: the list as the Address model
-- reads it, in order (json, not jsonb: stored and read back as text, never queried inside).
-- `tokens`: what a push service may report dead among them (push: the token; webpush: the
-- subscription's endpoint), matched against `dead_tokens` on every read.
alter table recipients
    add column if not exists addresses json not null default '[]'::json,
    add column if not exists tokens text[] not null default '{}';

update recipients r
   set addresses = a.addresses, tokens = a.tokens
  from (select tenant, recipient_id,
               json_agg(json_strip_nulls(json_build_object(
                   'channel', channel, 'address', address, 'platform', platform,
                   'app_id', app_id, 'last_seen', last_seen)) order by position) as addresses,
               coalesce(array_agg(coalesce(endpoint, address) order by position)
                        filter (where channel in ('push', 'webpush')), '{}') as tokens
          from recipient_addresses
         group by tenant, recipient_id) a
 where r.tenant = a.tenant and r.id = a.recipient_id;

drop trigger if exists recipients_erase_addresses on recipients;
drop function if exists recipients_erase_addresses();
drop table if exists recipient_addresses;

-- Reads match a recipient's tokens against the reports by token alone (the channel is
-- checked after): equality is all this answers.
create index if not exists dead_tokens_token_idx on dead_tokens using hash (token);
