"""Real HTTP emulators of the providers' APIs and webhook senders, for tests and demos."""
