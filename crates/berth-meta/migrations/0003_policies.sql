ALTER TABLE repositories ADD COLUMN policy TEXT
