// Symbolon sign-in: token id -> POST /v1/auth/initiate -> OTP over the WebSocket
// (polling fallback) -> the phone approves -> SAML: post to /saml/complete;
// OIDC: post to /authorize/complete (which redirects to the client with a code);
// demo: show the identity token and check its signature against /jwks with WebCrypto.
(function () {
  'use strict';
  var app = document.getElementById('app');
  var mode = app.dataset.mode;
  var serviceId = app.dataset.serviceId;
  var scopes = app.dataset.scopes ? app.dataset.scopes.split(' ') : [];
  var $ = function (id) { return document.getElementById(id); };
  var form = $('start-form'), input = $('token-id'), button = $('start-button');
  var stepStart = $('step-start'), stepOtp = $('step-otp'), otpEl = $('otp'), countdown = $('countdown');
  var statusEl = $('status'), alertEl = $('alert'), retry = $('retry');
  var current = null;

  function setStatus(text) { statusEl.textContent = text; }

  function stop() {
    if (!current) return;
    current.ended = true;
    if (current.ws) { try { current.ws.close(1000); } catch (e) { /* already closed */ } }
    clearInterval(current.poll);
    clearInterval(current.tick);
  }

  function fail(text) {
    stop();
    stepOtp.hidden = true;
    setStatus('');
    alertEl.textContent = text;
    alertEl.hidden = false;
    retry.hidden = false;
    button.disabled = false;
    retry.focus();
  }

  function reset() {
    stop();
    current = null;
    alertEl.hidden = true;
    alertEl.textContent = '';
    retry.hidden = true;
    retry.textContent = 'Try again';
    stepOtp.hidden = true;
    stepStart.hidden = false;
    button.disabled = false;
    setStatus('');
    input.focus();
  }

  function problemText(status, body, retryAfter) {
    var code = body && body.code;
    var wait = retryAfter ? ' Try again in ' + retryAfter + ' seconds.' : ' Try again later.';
    switch (code) {
      case 'rate_limited': return 'Too many sign-in attempts.' + wait;
      case 'locked_out': return 'This token id is locked after repeated failures.' + wait;
      case 'too_many_pending': return 'Sign-ins are already waiting for this token id. Answer them on your phone or wait until they expire.';
      case 'invalid_request': return 'Check the token id: 6 to 64 letters, digits, dots, dashes or underscores.';
      case 'origin_not_allowed': case 'unknown_service': case 'invalid_scope':
        return 'This page is not allowed to start a sign-in for this service.';
      case 'overloaded': case 'unavailable': return 'The sign-in server is busy.' + wait;
      default: return 'The sign-in could not start (' + (code || ('HTTP ' + status)) + ').';
    }
  }

  function groupDigits(otp) {
    var half = Math.ceil(otp.length / 2);
    return otp.slice(0, half) + '\u2009' + otp.slice(half);
  }

  function showOtp(otp, expiresAt) {
    if (!current || current.ended) return;
    if (current.otp !== otp) {
      current.otp = otp;
      otpEl.textContent = groupDigits(otp);
      otpEl.setAttribute('aria-label', 'Code ' + otp.split('').join(' '));
      otpEl.dataset.otp = otp;
      stepStart.hidden = true;
      stepOtp.hidden = false;
      setStatus('Waiting for your approval on the phone.');
    }
    if (expiresAt) current.expiresAt = expiresAt;
    tick();
  }

  // After 20 s without an approval, the likeliest mistake is the token id.
  var SLOW_HINT_AFTER_MS = 20000;

  function tick() {
    if (!current || current.ended || !current.expiresAt) return;
    if (Date.now() - current.startedAt >= SLOW_HINT_AFTER_MS) $('slow-hint').hidden = false;
    var left = current.expiresAt - Math.floor(Date.now() / 1000);
    if (left > 0) {
      countdown.textContent = 'The code expires in ' + left + ' s.';
    } else {
      countdown.textContent = 'The code has expired.';
      // The server says so too; this covers a channel that went quiet.
      if (left < -5) fail('The code expired before it was approved. Start again to get a new one.');
    }
  }

  function handle(kind, msg) {
    if (!current || current.ended) return;
    switch (kind) {
      case 'otp': case 'pending': showOtp(msg.otp, msg.expires_at); break;
      case 'approved': approved(msg.id_token); break;
      case 'rejected': fail('The sign-in was rejected on the phone.'); break;
      case 'expired': fail('The code expired before it was approved. Start again to get a new one.'); break;
      case 'locked': fail('Too many wrong attempts: this sign-in is locked. Start again.'); break;
      default: break;
    }
  }

  function startPolling() {
    if (!current || current.ended || current.poll) return;
    var s = current;
    var once = function () {
      if (s.ended) return;
      fetch('/v1/auth/sessions/' + encodeURIComponent(s.id), {
        headers: { 'Authorization': 'Bearer ' + s.token }, cache: 'no-store', credentials: 'omit'
      }).then(function (r) {
        if (r.status === 404) { handle('expired', {}); return null; }
        return r.ok ? r.json() : null;
      }).then(function (body) {
        if (body && current === s) handle(body.status, body);
      }).catch(function () { /* keep polling */ });
    };
    s.poll = setInterval(once, 2000);
    once();
  }

  function openChannel(path) {
    var s = current;
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
    var ws;
    try { ws = new WebSocket(url); } catch (e) { startPolling(); return; }
    s.ws = ws;
    ws.onopen = function () { ws.send(JSON.stringify({ type: 'hello', browser_token: s.token })); };
    ws.onmessage = function (ev) {
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (current === s) handle(msg.type, msg);
    };
    ws.onclose = function () { if (current === s && !s.ended) startPolling(); };
  }

  function start(tokenId) {
    button.disabled = true;
    alertEl.hidden = true;
    setStatus('Starting the sign-in…');
    fetch('/v1/auth/initiate', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token_id: tokenId, service_id: serviceId, scopes: scopes }),
      cache: 'no-store',
      credentials: 'omit'
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        if (r.status !== 201 || !body) {
          fail(problemText(r.status, body, r.headers.get('Retry-After')));
          return;
        }
        current = {
          id: body.session_id, token: body.browser_token, expiresAt: body.expires_at, ended: false,
          startedAt: Date.now()
        };
        $('entered-id').textContent = tokenId;
        $('slow-hint').hidden = true;
        current.tick = setInterval(tick, 1000);
        setStatus('Waiting for the code…');
        openChannel(body.ws_url);
      });
    }).catch(function () {
      fail('The sign-in server cannot be reached. Check your connection and try again.');
    });
  }

  function b64uDecode(s) {
    s = s.replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) s += '=';
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function b64uJson(s) { return JSON.parse(new TextDecoder().decode(b64uDecode(s))); }

  function verifyJwt(jwt, header) {
    var sigEl = $('signature');
    if (!window.crypto || !window.crypto.subtle) {
      sigEl.textContent = 'Signature not checked: WebCrypto needs a secure context (https, or http://localhost).';
      return;
    }
    var parts = jwt.split('.');
    fetch('/jwks', { cache: 'no-store', credentials: 'omit' }).then(function (r) { return r.json(); }).then(function (jwks) {
      var jwk = (jwks.keys || []).filter(function (k) { return k.kid === header.kid; })[0];
      if (!jwk) throw new Error('no key with this kid in /jwks');
      return crypto.subtle.importKey('jwk', { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, ext: true },
        { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
    }).then(function (key) {
      return crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, b64uDecode(parts[2]),
        new TextEncoder().encode(parts[0] + '.' + parts[1]));
    }).then(function (ok) {
      sigEl.dataset.verified = ok ? 'true' : 'false';
      sigEl.className = ok ? 'ok' : 'alert';
      sigEl.textContent = ok
        ? 'Signature verified in your browser (ES256, WebCrypto) with key ' + header.kid + ' from /jwks.'
        : 'Signature does NOT verify against /jwks.';
    }).catch(function (e) {
      sigEl.dataset.verified = 'false';
      sigEl.className = 'alert';
      sigEl.textContent = 'Signature could not be checked: ' + e.message;
    });
  }

  function approved(idToken) {
    var s = current;
    stop();
    stepOtp.hidden = true;
    if (mode === 'saml' || mode === 'oidc') {
      setStatus('Approved. Taking you back to the service…');
      var done = $('complete-form');
      done.elements.session_id.value = s.id;
      done.elements.browser_token.value = s.token;
      done.submit();
      return;
    }
    setStatus('Approved on the phone.');
    var parts = String(idToken || '').split('.');
    try {
      var header = b64uJson(parts[0]);
      $('jwt-header').textContent = JSON.stringify(header, null, 2);
      $('jwt-claims').textContent = JSON.stringify(b64uJson(parts[1]), null, 2);
      $('jwt-raw').textContent = idToken;
      $('result').hidden = false;
      verifyJwt(idToken, header);
    } catch (e) {
      fail('The identity token could not be read.');
    }
    retry.textContent = 'Sign in again';
    retry.hidden = false;
  }

  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var tokenId = input.value.trim();
    if (!/^[A-Za-z0-9._-]{6,64}$/.test(tokenId)) {
      input.setAttribute('aria-invalid', 'true');
      alertEl.textContent = 'A token id has 6 to 64 letters, digits, dots, dashes or underscores.';
      alertEl.hidden = false;
      input.focus();
      return;
    }
    input.removeAttribute('aria-invalid');
    if (mode === 'demo') $('result').hidden = true;
    start(tokenId);
  });
  // Cancel while waiting: forget this session (it expires on the server by itself) and
  // go back to the token id, e.g. to fix a mistyped one.
  $('cancel-signin').addEventListener('click', function () {
    reset();
    setStatus('Sign-in cancelled. Enter your token id to start again.');
  });
  retry.addEventListener('click', function () {
    if (mode === 'demo') $('result').hidden = true;
    reset();
  });
  input.focus();
})();
