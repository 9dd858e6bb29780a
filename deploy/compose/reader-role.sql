-- The read-only login role for BI tools (Metabase), run by docker-compose.yml's
-- one-shot `reader-role` service on every `docker compose up`; the one-shot
-- `grant-read` service then runs `syncd grant-read` for it, which gives it
-- SELECT on syncd's tables and views, present and future.
--
-- psql 15 or newer (for \getenv), connected as the database superuser, with
--   READER_USER      the role's name
--   READER_PASSWORD  its password
-- in its environment.  Idempotent, and it converges: the role is created when
-- missing, then its attributes and password are set every time, so a changed
-- READER_PASSWORD takes effect at the next `docker compose up`.  Never alters
-- a superuser or the role it runs as.

\set ON_ERROR_STOP on
\getenv reader_user READER_USER
\getenv reader_password READER_PASSWORD
\if :{?reader_user}
\else
  \set reader_user ''
\endif
\if :{?reader_password}
\else
  \set reader_password ''
\endif

SELECT :'reader_user' = '' AS no_user,
       :'reader_password' = '' AS no_password,
       :'reader_user' = current_user
         OR EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader_user' AND rolsuper)
         AS is_superuser
\gset
\if :no_user
  DO $$ BEGIN RAISE EXCEPTION 'READER_USER is empty: name the read-only role'; END $$;
\endif
\if :no_password
  DO $$ BEGIN RAISE EXCEPTION 'READER_PASSWORD is empty: set the read-only role''s password'; END $$;
\endif
\if :is_superuser
  DO $$ BEGIN RAISE EXCEPTION 'READER_USER names a superuser: choose another role name'; END $$;
\endif

SELECT format('CREATE ROLE %I', :'reader_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader_user')
\gexec

-- The password travels to the server as text (psql's \password, which hashes it
-- first, only works interactively); the server stores its SCRAM hash.
SELECT format(
  'ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
  :'reader_user', :'reader_password')
\gexec

-- Belt and braces next to the grants: its sessions cannot write even by mistake.
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'reader_user')
\gexec
