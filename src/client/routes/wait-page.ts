/**
 * GET /orders/:orderId/wait: the buyer's payment-waiting page. One self-contained HTML document (inline CSS and
 * JS, no external assets, no build step) under a strict Content-Security-Policy that admits exactly its own
 * inline script and style by hash. It shows the stages (reserved -> waiting for payment -> confirming -> done),
 * the deadline countdown, what is happening now and next (from describeStatus, in English and Chinese), the
 * payment link while payment is awaited, the refund promise, and a one-click support button
 * (POST /orders/:orderId/escalate). It polls GET /orders/:orderId while the order is not final.
 *
 * Everything from the order is escaped: the server escapes what it renders, the script only uses textContent.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { FINAL_STATUSES, OrderId } from '../../contracts/order';
import { formatMoney } from '../../shared/money';
import { publicOrderView, type OrderService, type OrderView } from '../orders-service';

/** Poll interval while the order awaits payment, and while it waits for something slower (review). */
const POLL_MS = 2_000;
const SLOW_POLL_MS = 10_000;

/** Escapes text for HTML element content and double-quoted attributes. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON safe to place inside a `<script type="application/json">` element. */
function jsonForScript(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

const STYLE = `
:root{color-scheme:light;--ok:#137333;--warn:#b06000;--bad:#a50e0e;--muted:#5f6368;--line:#dadce0;--accent:#1a73e8}
*{box-sizing:border-box}
[hidden]{display:none!important}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI","PingFang SC","Noto Sans CJK SC","Microsoft YaHei",sans-serif;background:#f6f8fa;color:#202124}
main{max-width:40rem;margin:0 auto;padding:1.25rem}
h1{font-size:1.15rem;margin:0 0 .25rem}
.sub{color:var(--muted);font-size:.9rem;margin:0 0 1rem;word-break:break-all}
.card{background:#fff;border:1px solid var(--line);border-radius:.75rem;padding:1rem 1.25rem;margin:0 0 1rem}
.langs{float:right;display:flex;gap:.25rem}
.langs button{font:inherit;font-size:.8rem;border:1px solid var(--line);background:#fff;border-radius:1rem;padding:.1rem .6rem;cursor:pointer}
.langs button[aria-pressed="true"]{background:var(--accent);border-color:var(--accent);color:#fff}
body.lang-en [lang="zh"],body.lang-zh [lang="en"]{display:none}
body.lang-both [lang="zh"]{display:block;color:var(--muted);font-size:.95em}
body.lang-both .inline[lang="zh"]{display:inline;margin-left:.35em}
ol.steps{list-style:none;display:flex;gap:.25rem;padding:0;margin:0 0 1rem}
ol.steps li{flex:1;text-align:center;font-size:.8rem;padding:.5rem .2rem;border-top:4px solid var(--line);color:var(--muted)}
ol.steps li[data-state="done"]{border-color:var(--ok);color:var(--ok)}
ol.steps li[data-state="current"]{border-color:var(--accent);color:#202124;font-weight:600}
ol.steps li[data-state="ended"]{border-color:var(--bad);color:var(--bad);font-weight:600}
ol.steps li[data-state="skipped"]{border-style:dashed;opacity:.6}
.status{font-size:1.5rem;font-weight:700;margin:0 0 .25rem}
.status[data-tone="ok"]{color:var(--ok)}.status[data-tone="bad"]{color:var(--bad)}.status[data-tone="wait"]{color:var(--accent)}.status[data-tone="warn"]{color:var(--warn)}
.countdown{font-variant-numeric:tabular-nums;font-size:1.1rem;margin:.25rem 0 .75rem}
.label{font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:.75rem 0 .1rem}
p{margin:.1rem 0}
a.pay{display:inline-block;margin:.75rem 0 0;background:var(--accent);color:#fff;text-decoration:none;padding:.6rem 1.2rem;border-radius:.5rem;font-weight:600}
.safe{border-left:4px solid var(--ok)}
button.support{font:inherit;font-weight:600;background:#fff;border:2px solid var(--accent);color:var(--accent);border-radius:.5rem;padding:.5rem 1rem;cursor:pointer}
button.support:disabled{opacity:.6;cursor:progress}
.answer{margin-top:.75rem}
.answer[data-tone="bad"]{color:var(--bad)}
.conn{color:var(--warn);font-size:.9rem}
details{font-size:.85rem;color:var(--muted)}
footer{color:var(--muted);font-size:.8rem;text-align:center}
`;

/** The page's behaviour; plain ES2017, no template literals, only textContent for data. */
const SCRIPT = `
(function () {
  'use strict';
  var cfg = JSON.parse(document.getElementById('page-data').textContent);
  var order = cfg.order;
  var finals = cfg.finalStatuses;
  var skew = cfg.serverNow - Date.now();
  var lang = pickLang();
  var timer = null;
  var failures = 0;
  var stopped = false;
  var lastUpdate = Date.now();

  var STATUS = {
    AWAITING_PAYMENT: ['Waiting for payment', '等待付款', 'wait'],
    PAID: ['Paid', '已支付', 'ok'],
    EXPIRED: ['Expired', '已过期', 'bad'],
    CANCELLED: ['Cancelled', '已取消', 'bad'],
    REFUNDED: ['Refunded', '已退款', 'warn'],
    NEEDS_REVIEW: ['In review', '人工审核中', 'warn'],
    FAILED: ['Not placed', '未能下单', 'bad']
  };
  var PHASES = ['RESERVING', 'AWAITING_PAYMENT', 'CONFIRMING', 'DONE'];

  function $(id) { return document.getElementById(id); }
  function pickLang() {
    var q = new URLSearchParams(location.search).get('lang');
    if (q === 'en' || q === 'zh' || q === 'both') return q;
    var langs = navigator.languages || [navigator.language || 'en'];
    return String(langs[0] || 'en').toLowerCase().indexOf('zh') === 0 ? 'zh' : 'en';
  }
  function bi(el, en, zh) {
    el.textContent = '';
    var a = document.createElement('span'); a.lang = 'en'; a.className = 'inline'; a.textContent = en;
    var b = document.createElement('span'); b.lang = 'zh'; b.className = 'inline'; b.textContent = zh;
    el.appendChild(a); el.appendChild(b);
  }
  function biBlock(el, text) {
    el.textContent = '';
    var en = document.createElement('p'); en.lang = 'en'; en.textContent = (text && text.en) || '';
    var zh = document.createElement('p'); zh.lang = 'zh'; zh.textContent = (text && text.zh) || '';
    el.appendChild(en); el.appendChild(zh);
  }
  function setLang(next) {
    lang = next;
    document.body.className = 'lang-' + lang;
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    var buttons = document.querySelectorAll('.langs button');
    for (var i = 0; i < buttons.length; i++) buttons[i].setAttribute('aria-pressed', String(buttons[i].getAttribute('data-lang') === lang));
    render();
  }
  function isFinal(status) { return finals.indexOf(status) >= 0; }
  function safeUrl(u) {
    try { var p = new URL(u, location.href); return p.protocol === 'https:' || p.protocol === 'http:' ? p.href : null; } catch (e) { return null; }
  }
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function clock(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + ':' + pad(m) : String(m)) + ':' + pad(s % 60);
  }
  function localTime(iso, zh) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return '';
    try { return d.toLocaleTimeString(zh ? 'zh-CN' : 'en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' }); } catch (e) { return d.toISOString(); }
  }

  function renderSteps(m) {
    var status = order.status;
    var phase = PHASES.indexOf(m.phase);
    if (phase < 0) phase = 1;
    var items = document.querySelectorAll('#steps li');
    var outcome = STATUS[status] || [status, status, 'warn'];
    var paidPath = status === 'PAID';
    for (var i = 0; i < items.length; i++) {
      var state;
      if (!isFinal(status)) state = i < phase ? 'done' : i === phase ? 'current' : 'todo';
      else if (paidPath) state = 'done';
      else if (status === 'FAILED') state = i === 0 || i === 3 ? 'ended' : 'skipped';
      else state = i < 2 ? 'done' : i === 3 ? 'ended' : 'skipped';
      items[i].setAttribute('data-state', state);
    }
    var last = items[3].querySelector('.step-name');
    if (isFinal(status)) bi(last, outcome[0], outcome[1]); else bi(last, 'Done', '完成');
    var third = items[2].querySelector('.step-name');
    if (status === 'NEEDS_REVIEW') bi(third, 'In review', '人工审核'); else bi(third, 'Confirming', '确认中');
  }

  function render() {
    var m = order.messages || {};
    var status = order.status;
    var s = STATUS[status] || [status, status, 'warn'];
    var label = $('status-label');
    if (status === 'AWAITING_PAYMENT' && m.phase === 'CONFIRMING') s = ['Payment received, confirming', '已收到付款，正在确认', 'wait'];
    else if (status === 'AWAITING_PAYMENT' && m.phase === 'RESERVING') s = ['Setting up your order', '正在创建订单', 'wait'];
    bi(label, s[0], s[1]);
    label.setAttribute('data-status', status);
    label.setAttribute('data-code', m.code || '');
    label.setAttribute('data-tone', s[2]);
    renderSteps(m);
    biBlock($('now'), m.user);
    biBlock($('next'), m.next);
    var when = $('expected');
    if (m.expectedBy && !isFinal(status)) {
      if (m.code === 'WAITING_FOR_PAYMENT' || m.code === 'CHECKING_WITH_PROVIDER') bi(when, 'Pay before ' + localTime(m.expectedBy, false), '请在 ' + localTime(m.expectedBy, true) + ' 前付款');
      else bi(when, 'Expected by ' + localTime(m.expectedBy, false), '预计完成时间：' + localTime(m.expectedBy, true));
      when.hidden = false;
    } else when.hidden = true;
    biBlock($('support-facts'), m.support);
    $('stage').textContent = [status, order.stage || '', m.code || ''].filter(Boolean).join(' / ');
    var pay = $('pay');
    var url = order.payment && order.payment.paymentUrl ? safeUrl(order.payment.paymentUrl) : null;
    if (status === 'AWAITING_PAYMENT' && url && m.phase !== 'CONFIRMING') { pay.href = url; pay.hidden = false; } else { pay.hidden = true; pay.removeAttribute('href'); }
    tick();
    $('updated').textContent = new Date(lastUpdate).toLocaleTimeString(lang === 'zh' ? 'zh-CN' : 'en-GB');
  }

  function tick() {
    var box = $('countdown');
    if (order.status !== 'AWAITING_PAYMENT' || !order.deadline) { box.hidden = true; return; }
    var left = new Date(order.deadline).getTime() - (Date.now() + skew);
    box.hidden = false;
    box.setAttribute('data-left-ms', String(Math.max(0, left)));
    if (left > 0) bi(box, 'Time left to pay: ' + clock(left), '剩余付款时间：' + clock(left));
    else bi(box, 'The deadline has passed; closing the order.', '付款时间已到，正在关闭订单。');
  }

  function schedule(ms) {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(poll, ms);
  }

  function poll() {
    if (stopped) return;
    if (document.hidden) { schedule(POLL); return; }
    fetch('/orders/' + encodeURIComponent(order.orderId), { cache: 'no-store', headers: { accept: 'application/json' } })
      .then(function (r) {
        if (r.status === 404) { stopped = true; throw new Error('gone'); }
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (next) {
        failures = 0;
        $('conn').hidden = true;
        order = next;
        lastUpdate = Date.now();
        render();
        if (isFinal(order.status)) { stopped = true; document.body.setAttribute('data-polling', 'stopped'); return; }
        schedule(order.status === 'AWAITING_PAYMENT' ? POLL : SLOW_POLL);
      })
      .catch(function () {
        failures++;
        $('conn').hidden = false;
        if (!stopped) schedule(Math.min(30000, POLL * Math.pow(2, failures)));
      });
  }

  function escalate() {
    var button = $('support');
    var answer = $('support-answer');
    button.disabled = true;
    answer.removeAttribute('data-tone');
    bi(answer, 'Contacting customer service...', '正在联系客服…');
    fetch('/orders/' + encodeURIComponent(order.orderId) + '/escalate', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: '{}'
    })
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (body) { return { ok: r.ok, status: r.status, body: body }; }); })
      .then(function (res) {
        var b = res.body || {};
        answer.textContent = '';
        if (!res.ok) {
          answer.setAttribute('data-tone', 'bad');
          var msg = typeof b.message === 'string' ? b.message : 'HTTP ' + res.status;
          biBlock(answer, { en: 'Customer service could not be reached (' + msg + '). Please try again.', zh: '暂时无法联系客服（' + msg + '），请稍后重试。' });
          return;
        }
        var m = b.messages || {};
        var told = m.user || { en: 'Customer service has your case and is checking it now.', zh: '客服已收到您的问题，正在核实。' };
        var ticket = typeof b.ticketId === 'string' ? b.ticketId : '';
        biBlock(answer, {
          en: 'Customer service has your case' + (ticket ? ' (ticket ' + ticket + ')' : '') + '. ' + told.en,
          zh: '客服已受理' + (ticket ? '（工单号 ' + ticket + '）' : '') + '。' + told.zh
        });
        answer.setAttribute('data-ticket', ticket);
        if (!isFinal(order.status)) { stopped = false; schedule(0); }
      })
      .catch(function () {
        answer.setAttribute('data-tone', 'bad');
        biBlock(answer, { en: 'Network problem; please try again.', zh: '网络异常，请重试。' });
      })
      .then(function () { button.disabled = false; });
  }

  var POLL = cfg.pollMs, SLOW_POLL = cfg.slowPollMs;
  var langButtons = document.querySelectorAll('.langs button');
  for (var i = 0; i < langButtons.length; i++) {
    langButtons[i].addEventListener('click', function (e) { setLang(e.currentTarget.getAttribute('data-lang')); });
  }
  $('support').addEventListener('click', escalate);
  document.addEventListener('visibilitychange', function () { if (!document.hidden && !stopped) schedule(0); });
  setInterval(tick, 1000);
  setLang(lang);
  if (isFinal(order.status)) { stopped = true; document.body.setAttribute('data-polling', 'stopped'); }
  else { document.body.setAttribute('data-polling', 'on'); schedule(POLL); }
  document.body.setAttribute('data-ready', 'true');
})();
`;

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** Only this page's own inline script and style run; it may talk to its own origin and nothing else. */
const CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

function send(reply: FastifyReply, status: number, html: string): FastifyReply {
  return reply
    .code(status)
    .header('content-type', 'text/html; charset=utf-8')
    .header('content-security-policy', CSP)
    .header('cache-control', 'no-store')
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    .send(html);
}

function head(title: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,"><title>${escapeHtml(title)}</title>
<style>${STYLE}</style></head>`;
}

function notFoundPage(orderId: string): string {
  return `${head('Order not found · 未找到订单')}
<body class="lang-both"><main><div class="card">
<h1 id="not-found"><span lang="en">Order not found</span> <span lang="zh">未找到该订单</span></h1>
<p class="sub">${escapeHtml(orderId.slice(0, 80))}</p>
<p lang="en">Check the link you were given. If you paid for an order that does not show here, the money is refunded automatically.</p>
<p lang="zh">请检查您收到的链接。如果您为一个这里查不到的订单付了款，款项会自动原路退回。</p>
</div></main></body></html>`;
}

function waitPage(order: OrderView): string {
  const { messages } = order;
  const data = {
    order: publicOrderView(order),
    finalStatuses: FINAL_STATUSES,
    serverNow: Date.now(),
    pollMs: POLL_MS,
    slowPollMs: SLOW_POLL_MS,
  };
  const payUrl =
    order.status === 'AWAITING_PAYMENT' && order.payment?.paymentUrl && /^https?:\/\//i.test(order.payment.paymentUrl)
      ? order.payment.paymentUrl
      : null;
  return `${head(`Order ${order.orderId} · 订单`)}
<body class="lang-both" data-ready="false"><main>
<div class="langs" role="group" aria-label="Language / 语言">
<button type="button" data-lang="en" aria-pressed="false">EN</button><button type="button" data-lang="zh" aria-pressed="false">中文</button><button type="button" data-lang="both" aria-pressed="false">EN + 中文</button>
</div>
<h1><span lang="en" class="inline">Your order</span><span lang="zh" class="inline">您的订单</span></h1>
<p class="sub"><span id="order-id">${escapeHtml(order.orderId)}</span> · <span id="amount">${escapeHtml(formatMoney(order.amount, order.currency))}</span></p>

<div class="card" aria-live="polite">
<ol class="steps" id="steps">
<li data-state="todo"><span class="step-name"><span lang="en" class="inline">Items reserved</span><span lang="zh" class="inline">已锁定商品</span></span></li>
<li data-state="todo"><span class="step-name"><span lang="en" class="inline">Waiting for payment</span><span lang="zh" class="inline">等待付款</span></span></li>
<li data-state="todo"><span class="step-name"><span lang="en" class="inline">Confirming</span><span lang="zh" class="inline">确认中</span></span></li>
<li data-state="todo"><span class="step-name"><span lang="en" class="inline">Done</span><span lang="zh" class="inline">完成</span></span></li>
</ol>
<p class="status" id="status-label" data-status="${escapeHtml(order.status)}">${escapeHtml(order.status)}</p>
<p class="countdown" id="countdown" hidden></p>
<p class="label"><span lang="en" class="inline">What is happening now</span><span lang="zh" class="inline">当前进展</span></p>
<div id="now"><p lang="en">${escapeHtml(messages.user.en)}</p><p lang="zh">${escapeHtml(messages.user.zh)}</p></div>
<p class="label"><span lang="en" class="inline">What happens next</span><span lang="zh" class="inline">下一步</span></p>
<div id="next"><p lang="en">${escapeHtml(messages.next.en)}</p><p lang="zh">${escapeHtml(messages.next.zh)}</p></div>
<p id="expected" hidden></p>
<a class="pay" id="pay" rel="noopener noreferrer"${payUrl ? ` href="${escapeHtml(payUrl)}"` : ' hidden'}><span lang="en" class="inline">Pay now</span><span lang="zh" class="inline">去付款</span></a>
<p class="conn" id="conn" hidden><span lang="en" class="inline">Connection problem; retrying…</span><span lang="zh" class="inline">网络异常，正在重试…</span></p>
</div>

<div class="card safe" id="reassurance">
<p lang="en"><strong>Your money is safe.</strong> A payment that reaches us after this order is closed, cancelled or could not be completed is refunded to you automatically and in full. Money is never kept for an order you did not get.</p>
<p lang="zh"><strong>资金安全保障：</strong>订单关闭、取消或未能完成后仍到账的付款，会自动全额原路退回。未成交的订单绝不扣留您的钱。</p>
</div>

<div class="card" id="support-card">
<button type="button" class="support" id="support"><span lang="en" class="inline">Contact customer service</span><span lang="zh" class="inline">一键联系客服</span></button>
<div class="answer" id="support-answer" role="status" aria-live="polite"></div>
<details><summary><span lang="en" class="inline">Details for customer service</span><span lang="zh" class="inline">客服参考信息</span></summary>
<p id="stage"></p><div id="support-facts"></div></details>
</div>
<footer><span lang="en" class="inline">Updates by itself · last update</span><span lang="zh" class="inline">自动刷新 · 最近更新</span> <span id="updated"></span></footer>
</main>
<script type="application/json" id="page-data">${jsonForScript(data)}</script>
<script>${SCRIPT}</script>
</body></html>`;
}

/** Registers GET /orders/:orderId/wait. */
export function registerWaitPage(app: FastifyInstance, orders: OrderService): void {
  app.get<{ Params: { orderId: string } }>('/orders/:orderId/wait', async (request, reply) => {
    const parsed = OrderId.safeParse(request.params.orderId);
    if (!parsed.success) return send(reply, 404, notFoundPage(request.params.orderId));
    const order = await orders.get(parsed.data, { live: true });
    if (!order) return send(reply, 404, notFoundPage(parsed.data));
    return send(reply, 200, waitPage(order));
  });
}
