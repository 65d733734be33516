// Progressive enhancement only: every page works without JavaScript.
// Sections marked data-show-when="control=value" are shown only while the
// named form control has that value (checkboxes: "on" when checked).
function value(form, name) {
  const els = form.querySelectorAll(`[name="${name}"]`);
  for (const el of els) {
    if (el.type === "checkbox") return el.checked ? "on" : "";
    if (el.type === "radio") { if (el.checked) return el.value; continue; }
    return el.value;
  }
  return "";
}

// Hidden fields are disabled too, so the form does not send what the user
// no longer sees (a PassiveSync rule's leftover filters, say).
function update(form) {
  for (const el of form.querySelectorAll("[data-show-when]")) {
    const [name, want] = el.dataset.showWhen.split("=");
    el.hidden = value(form, name) !== want;
  }
  for (const ctl of form.querySelectorAll("[data-show-when] :is(input, select, textarea, button)")) {
    ctl.disabled = ctl.closest("[hidden]") !== null;
  }
}

for (const form of document.querySelectorAll("form")) {
  if (!form.querySelector("[data-show-when]")) continue;
  form.addEventListener("change", () => update(form));
  update(form);
}

for (const sel of document.querySelectorAll("select[data-autosubmit]")) {
  sel.addEventListener("change", () => sel.form.submit());
}

// Copy buttons: data-copy holds the text.
for (const btn of document.querySelectorAll("button[data-copy]")) {
  btn.hidden = false;
  btn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(btn.dataset.copy);
      btn.textContent = "Copied";
    } catch {
      btn.textContent = "Select the text to copy";
    }
  });
}

// In a form with a field marked data-enter="<button id>", Enter in that
// field presses that button and Enter in its other text fields presses the
// primary one: the browser would press the first submit button in the
// page's order (List secrets, before Create), or none while it is hidden.
for (const form of document.querySelectorAll("form:has([data-enter])")) {
  const primary = form.querySelector("button.primary");
  let handled = false;
  form.addEventListener("keydown", (e) => {
    handled = false;
    const el = e.target;
    if (e.key !== "Enter" || !(el instanceof HTMLInputElement) || ["checkbox", "radio", "submit", "button"].includes(el.type)) return;
    const btn = el.dataset.enter ? document.getElementById(el.dataset.enter) : primary;
    if (!btn || btn.disabled) return;
    e.preventDefault();
    handled = true;
    form.requestSubmit(btn);
  });
  // A prevented keydown suppresses the keypress that submits implicitly;
  // synthetic key events (DevTools' protocol, which the tests use) still
  // send it.
  form.addEventListener("keypress", (e) => {
    if (handled && e.key === "Enter") e.preventDefault();
  });
}
