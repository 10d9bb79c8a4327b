"""Intake channels: SMTP/LMTP listener, stdin mail gateway, mbox/Maildir import."""
