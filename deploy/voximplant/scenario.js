/**
 * callgate ⇄ Voximplant: a VoxEngine scenario that bridges an incoming call to callgate's
 * `voximplant` route (PROTOCOLS.md §5, §12.7).
 *
 * The call's audio goes to the gateway as μ-law (no transcoding anywhere); the gateway's
 * audio is played into the call. callgate sends text events of its own, which this
 * scenario handles:
 *   {"event":"gw.clear"}   the caller barged in: drop the queued bot audio
 *   {"event":"gw.hangup"}  the conversation is over: hang up
 *   {"event":"gw.transfer","number":"+15550100"}  transfer_call: dial the number, bridge
 *                          the caller to it (callgate then closes the stream)
 *   {"event":"gw.send_dtmf","digits":"12#"}       send_dtmf: press keys toward the far end
 * and this scenario sends one:
 *   {"event":"gw.dtmf","digit":"5"}  the caller pressed a key
 *
 * Set GATEWAY_URL (and, for routes with token_in_start, TOKEN: a JWT from
 * `callgate token --call-sid ... --single-use`, e.g. fetched per call from your backend).
 */
require(Modules.WebSocket); // harmless where WebSocket is built in

const GATEWAY_URL = "wss://gw.example.com/voximplant";
const TOKEN = ""; // optional: a per-call JWT for routes with token_in_start = true
const TRANSFER_CALLER_ID = ""; // a number of your Voximplant account, shown on transfers

VoxEngine.addEventListener(AppEvents.CallAlerting, (event) => {
  const call = event.call;
  call.answer();

  call.addEventListener(CallEvents.Connected, () => {
    const ws = VoxEngine.createWebSocket(`${GATEWAY_URL}/${encodeURIComponent(call.id())}`);
    let transferring = false;

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
      } else if (data.event === "gw.transfer" && data.number) {
        // The assistant's handoff sentence has played: connect the caller to a person.
        transferring = true;
        const human = VoxEngine.callPSTN(data.number, TRANSFER_CALLER_ID);
        human.addEventListener(CallEvents.Connected, () => VoxEngine.sendMediaBetween(call, human));
        human.addEventListener(CallEvents.Failed, () => call.hangup());
        human.addEventListener(CallEvents.Disconnected, () => call.hangup());
      } else if (data.event === "gw.send_dtmf" && data.digits) {
        call.sendDigits(String(data.digits));
      }
    });

    // DTMF is a call event, not media: forward it.
    call.handleTones(true);
    call.addEventListener(CallEvents.ToneReceived, (e) => {
      ws.send(JSON.stringify({ event: "gw.dtmf", digit: String(e.tone) }));
    });

    // Either side may end the call; WebSockets are not closed with the call, so close it.
    ws.addEventListener(WebSocketEvents.CLOSE, () => {
      if (!transferring) call.hangup();
    });
    call.addEventListener(CallEvents.Disconnected, () => {
      ws.close();
      VoxEngine.terminate();
    });
  });
});
