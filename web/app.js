// Entry point of dmhub's chat page: plain ES modules, no build step.
// Kept tiny so the browser can start fetching the module graph (preloaded
// from index.html) while this file is still being parsed.
//
//   js/main.js        wiring: who is signed in, which screen, offline banner
//   js/api.js         HTTP API (cookie session; never stores a token)
//   js/socket.js      the reconnecting WebSocket: backoff, cursor, ping
//   js/store.js       state, merge rules, outbox (exactly-once sends)
//   js/router.js      URL <-> screen (hash routes + the compose deep link)
//   js/dom.js         element helpers that only ever create text nodes
//   js/format.js      times, lengths, handles
//   js/views/*.js     auth, inbox list, conversation, new message,
//                     composer, profile card, settings
import { start } from './js/main.js';

start();
