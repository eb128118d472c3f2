"""The Telegram channel: the bot answering webhook updates under its managed key."""
