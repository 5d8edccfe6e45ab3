-- PostgreSQL mirror of sqlite/0007.
-- (No semicolons in comments: the migration runner splits on them.)
-- Host execution (issue 11): on a server with users besides `admin`, tasks run on the
-- server's machine only in projects an administrator marked trusted. The admins' own
-- `admin` project is trusted, every other project starts untrusted (an administrator
-- decides, PATCH /projects/NAME).
ALTER TABLE projects ADD COLUMN trusted BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE projects SET trusted = TRUE WHERE name = 'admin'
