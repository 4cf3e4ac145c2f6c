// Live updates for the console: follows GET /live (the browser resumes after a
// dropped connection with Last-Event-ID by itself) and, for each event, reloads the
// page's live regions (elements with data-live and an id) from the server, so the
// page shows what a reload would, without one. Forms keep what is typed in them.
// The page is asked for "at" the event's log position: the server waits until its
// views have taken the event in (an event can reach the browser before the view).
(() => {
  const regions = () => Array.from(document.querySelectorAll("[data-live][id]"));
  if (regions().length === 0 || !("EventSource" in window)) return;
  let refreshing = false, again = false, latest = "";
  async function refresh(event) {
    if (event && event.lastEventId) latest = event.lastEventId;
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const url = new URL(window.location.href);
      if (latest) url.searchParams.set("at", latest);
      const response = await fetch(url, { headers: { "Accept": "text/html" } });
      if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const region of regions()) {
          const fresh = page.getElementById(region.id);
          if (fresh && fresh.innerHTML !== region.innerHTML) region.innerHTML = fresh.innerHTML;
        }
        document.body.dataset.liveUpdated = String(Date.now());
      }
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(null); }
    }
  }
  // From where the page was drawn; after a drop, the browser's Last-Event-ID wins.
  const after = document.body.dataset.liveAfter;
  const source = new EventSource(after ? "/live?after=" + encodeURIComponent(after) : "/live");
  source.onmessage = refresh;
  source.addEventListener("open", () => { document.body.dataset.live = "open"; });
  source.addEventListener("error", () => { document.body.dataset.live = "reconnecting"; });
  // Every event type (an SSE message with a type reaches only its own listeners):
  // an administrator's pages follow all of them.
  const known = ["UserRegistered", "EmailVerified", "VerificationMailRequested",
    "PasswordResetRequested", "PasswordChanged", "ProfileUpdated", "NotificationPreferencesChanged",
    "RoleGranted", "RoleRevoked", "UserDeactivated",
    "OrderPlaced", "PriceChanged", "TargetReached", "Rearmed", "TargetChanged",
    "OrderPaused", "OrderResumed", "OrderCancelled", "BecameAvailable", "BecameUnavailable",
    "PriceCheckRequested", "PriceObserved", "PriceCheckFailed",
    "ProductAdded", "ProductUpdated", "ProductPriceChanged", "StockAdjusted", "ProductRetired",
    "StockReserved", "ReservationRefused", "ReservationReleased", "StockShipped",
    "PurchasePlaced", "PurchaseConfirmed", "PurchaseRejected", "PurchaseCancelled",
    "PurchaseShipped", "PurchaseDelivered"];
  for (const type of known) source.addEventListener(type, refresh);
})();
