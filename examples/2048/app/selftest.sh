#!/bin/sh
# Serves /www on 127.0.0.1:PORT inside the image and checks the page comes back.
set -e
port=${1:-18048}
httpd -f -p "127.0.0.1:$port" -h /www &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
# The image has no /tmp: pages go through pipes.
for _ in 1 2 3 4 5 6 7 8 9 10; do
  if wget -q -O /dev/null "http://127.0.0.1:$port/"; then break; fi
  sleep 1
done
wget -q -O - "http://127.0.0.1:$port/" | grep -q '<title>2048</title>'
wget -q -O - "http://127.0.0.1:$port/game.js" | grep -q 'function slide'
echo "served the 2048 page and its script on 127.0.0.1:$port"
