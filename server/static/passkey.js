// Passkeys on smart-auth's pages: fetch the options from the server, let the browser create or use a
// passkey, and post its answer with the form. Every check happens on the server.
for (const form of document.querySelectorAll('form.passkey')) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const error = form.querySelector('.passkey-error');
    error.hidden = true;
    try {
      if (!window.PublicKeyCredential?.parseRequestOptionsFromJSON) throw new Error('This browser cannot use passkeys here.');
      const res = await fetch(form.dataset.options, {
        method: 'POST', credentials: 'same-origin', body: new URLSearchParams({ csrf: form.elements.csrf.value }),
      });
      const options = await res.json();
      if (!res.ok) throw new Error(options.error_description || 'The server refused.');
      const credential = form.dataset.mode === 'register'
        ? await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options) })
        : await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options) });
      form.elements.credential.value = JSON.stringify(credential.toJSON());
      form.submit();
    } catch (err) {
      error.textContent = err.name === 'NotAllowedError' ? 'The passkey request was cancelled or timed out.' : err.message;
      error.hidden = false;
    }
  });
}
