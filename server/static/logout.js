// RP-initiated logout without a session: nothing to ask, so go on to the app at once (the page's
// Continue button does the same without scripts).
document.querySelector('form.logout-continue')?.submit();
