-- The service creates its database itself if missing; give its user the right to do so.
GRANT ALL PRIVILEGES ON *.* TO 'payflow'@'%';
FLUSH PRIVILEGES;
