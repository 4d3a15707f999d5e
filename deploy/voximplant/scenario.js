/**
 * callgate ⇄ Voximplant: a VoxEngine scenario that bridges an incoming call to callgate's
 * `voximplant` route (PROTOCOLS.md §5, §12.7).
 *
 * The call's audio goes to the gateway as μ-law (no transcoding anywhere); the gateway's
 * audio is played into the call. callgate sends three text events of its own, which this
 * scenario handles:
 *   {"event":"gw.clear"}   the caller barged in: drop the queued bot audio
 *   {"event":"gw.hangup"}  the conversation is over: hang up
 * and this scenario sends one:
 *   {"event":"gw.dtmf","digit":"5"}  the caller pressed a key
 *
 * Set GATEWAY_URL (and, for routes with token_in_start, TOKEN: a JWT from
 * `callgate token --call-sid ... --single-use`, e.g. fetched per call from your backend).
 */
require(Modules.WebSocket); // harmless where WebSocket is built in

const GATEWAY_URL = "wss://gw.example.com/voximplant";
const TOKEN = ""; // optional: a per-call JWT for routes with token_in_start = true

VoxEngine.addEventListener(AppEvents.CallAlerting, (event) => {
  const call = event.call;
  call.answer();

  call.addEventListener(CallEvents.Connected, () => {
    const ws = VoxEngine.createWebSocket(`${GATEWAY_URL}/${encodeURIComponent(call.id())}`);

    ws.addEventListener(WebSocketEvents.OPEN, () => {
      const customParameters = { callId: call.id(), from: call.callerid(), to: call.number() };
      if (TOKEN) customParameters.token = TOKEN;
      // Caller audio → gateway, μ-law 8 kHz (callgate passes it to the model untouched).
      call.sendMediaTo(ws, { encoding: WebSocketAudioEncoding.ULAW, tag: "caller", customParameters });
      // Gateway audio → caller.
      ws.sendMediaTo(call);
    });

    ws.addEventListener(WebSocketEvents.MESSAGE, (message) => {
      let data;
      try {
        data = JSON.parse(message.text);
      } catch (e) {
        return;
      }
      if (data.event === "gw.clear") {
        ws.clearMediaBuffer();
      } else if (data.event === "gw.hangup") {
        call.hangup();
      }
    });

    // DTMF is a call event, not media: forward it.
    call.handleTones(true);
    call.addEventListener(CallEvents.ToneReceived, (e) => {
      ws.send(JSON.stringify({ event: "gw.dtmf", digit: String(e.tone) }));
    });

    // Either side may end the call; WebSockets are not closed with the call, so close it.
    ws.addEventListener(WebSocketEvents.CLOSE, () => call.hangup());
    call.addEventListener(CallEvents.Disconnected, () => {
      ws.close();
      VoxEngine.terminate();
    });
  });
});
