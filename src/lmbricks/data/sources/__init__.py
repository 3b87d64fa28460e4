"""One reader per registry package: turns a downloaded package into documents."""
