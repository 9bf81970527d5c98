#!/bin/sh
# An llmos-tui event hook: posts the event (JSON on stdin) to a webhook with curl.
#
#   [hooks]
#   on_finding = "/path/to/examples/hooks/webhook.sh"
#   on_action = "/path/to/examples/hooks/webhook.sh"
#   on_change = "/path/to/examples/hooks/webhook.sh"
#
# LLMOS_WEBHOOK_URL: where to post (a Slack/Mattermost/ntfy/your-own endpoint that takes JSON).
# LLMOS_EVENT is set by llmos-tui to the event kind (finding, action, settled, change).
# A non-zero exit (curl -f on an HTTP error) is shown by the doctor and journaled; the hook is
# killed after [hooks] timeout_s (default 10 s), so keep --max-time below it.
set -eu
: "${LLMOS_WEBHOOK_URL:?set LLMOS_WEBHOOK_URL to the webhook address}"
exec curl -fsS --max-time 8 -X POST -H 'Content-Type: application/json' \
    -H "X-Llmos-Event: ${LLMOS_EVENT:-unknown}" --data-binary @- "$LLMOS_WEBHOOK_URL"
