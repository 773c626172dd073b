"""What leaves the server: where webhooks may go, how they are signed, how secrets are kept."""
