"""The platform's own library: settings, database, events, outbox, inbox, auth, errors, money."""
