#!/usr/bin/env bash
# Send the webhook an Update exactly as Telegram would, to try the bot without Telegram:
#   TELEGRAM_WEBHOOK_SECRET=s3cret TELEGRAM_API_KEY=$BOT_KEY REDIS_URL=redis://127.0.0.1:6379/0 \
#     API_KEYS=$AICORE_KEY scripts/serve.sh   # elsewhere; $BOT_KEY: docs/integrations.md#the-bots-key
#   TELEGRAM_WEBHOOK_SECRET=s3cret examples/telegram_update.sh "Hello bot"
#   TELEGRAM_WEBHOOK_SECRET=s3cret examples/telegram_update.sh "/model gemma3-270m"
# The answer is the sendMessage call Telegram would make: {"method": "sendMessage", "chat_id": ..., "text": ...}
set -euo pipefail
URL="${AICORE_URL:-http://127.0.0.1:8000}"
TEXT="${1:-Hello}"
UPDATE_ID="${UPDATE_ID:-$(date +%s%N | cut -c1-15)}"
body=$(python3 -c 'import json, sys; print(json.dumps({"update_id": int(sys.argv[1]), "message": {
  "message_id": 1, "date": 1764200000, "text": sys.argv[2],
  "from": {"id": 42, "is_bot": False, "first_name": "Ada"},
  "chat": {"id": 42, "type": "private", "first_name": "Ada"}}}))' "$UPDATE_ID" "$TEXT")
curl -sS "$URL/api/v1/webhooks/telegram" \
  -H "X-Telegram-Bot-Api-Secret-Token: ${TELEGRAM_WEBHOOK_SECRET:?set TELEGRAM_WEBHOOK_SECRET}" \
  -H 'Content-Type: application/json' -d "$body"
echo
