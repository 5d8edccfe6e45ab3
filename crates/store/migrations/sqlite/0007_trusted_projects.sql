-- (No semicolons in comments: the migration runner splits on them.)
-- Host execution (issue 11): on a server with users besides `admin`, tasks run on the
-- server's machine only in projects an administrator marked trusted. The admins' own
-- `admin` project is trusted, every other project starts untrusted (an administrator
-- decides, PATCH /projects/NAME).
ALTER TABLE projects ADD COLUMN trusted INTEGER NOT NULL DEFAULT 0;
UPDATE projects SET trusted = 1 WHERE name = 'admin'
