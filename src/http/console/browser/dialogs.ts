// One modal dialog for every confirmation and form (the page's single <dialog>: the browser traps
// focus in it and Escape closes it). A refused action shows the control error's message and code
// in the dialog, and, when the refusal can be overridden (a busy volume), a button to force it.
import { AuthFailure, RpcFailure } from './api.ts';
import { h, type Child } from './dom.ts';

export interface Field {
  name: string;
  label: string;
  /** A text input unless said: a choice among `options`, a checkbox (value 'on' or ''), or a whole number. */
  kind?: 'text' | 'select' | 'checkbox' | 'number';
  options?: { value: string; label: string }[];
  value?: string;
  min?: number;
  required?: boolean;
  placeholder?: string;
  pattern?: string;
  maxLength?: number;
  hint?: string;
}

export interface DialogSpec {
  title: string;
  body: Child[];
  fields?: Field[];
  confirm: string;
  danger?: boolean;
  /** Does the action; throws RpcFailure when refused. Returns the success message. */
  run(values: Record<string, string>, force: boolean): Promise<string>;
  /** For a refusal that force overrides: the force button's label, else null. */
  forceLabel?(e: RpcFailure): string | null;
}

export interface DialogHooks {
  toast(text: string): void;
  authFailed(): void;
}

let hooks: DialogHooks = { toast: () => undefined, authFailed: () => undefined };

export function setDialogHooks(h: DialogHooks): void {
  hooks = h;
}

function dialogElement(): HTMLDialogElement {
  const d = document.getElementById('dialog');
  if (!(d instanceof HTMLDialogElement)) throw new Error('the page has no #dialog');
  return d;
}

export function openDialog(spec: DialogSpec): void {
  const dialog = dialogElement();
  const inputs = (spec.fields ?? []).map((f) => fieldInput(f));
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const cancel = h('button', { type: 'button', class: 'secondary', 'data-key': 'dialog-cancel' }, 'Cancel');
  const force = h('button', { type: 'button', class: 'danger', hidden: true, 'data-key': 'dialog-force' });
  const confirm = h('button', { type: 'submit', class: spec.danger ? 'danger' : 'primary', 'data-key': 'dialog-confirm' }, spec.confirm);
  const form = h('form', { novalidate: false },
    h('h2', { id: 'dialog-title' }, spec.title),
    h('div', { class: 'dialog-body' }, ...spec.body),
    ...(spec.fields ?? []).map((f, i) => h('div', { class: f.kind === 'checkbox' ? 'field check' : 'field' },
      f.kind === 'checkbox' ? inputs[i] : null,
      h('label', { for: `field-${f.name}` }, f.label),
      f.kind === 'checkbox' ? null : inputs[i],
      f.hint ? h('small', { id: `hint-${f.name}` }, f.hint) : null)),
    error,
    h('div', { class: 'buttons' }, cancel, force, confirm));

  let busy = false;
  const values = (): Record<string, string> => Object.fromEntries(inputs.map((i) => [
    i.name, i instanceof HTMLInputElement && i.type === 'checkbox' ? (i.checked ? 'on' : '') : i.value.trim()]));
  const attempt = async (forced: boolean): Promise<void> => {
    if (busy) return;
    busy = true;
    for (const b of [confirm, force, cancel]) b.disabled = true;
    error.hidden = true;
    try {
      const message = await spec.run(values(), forced);
      dialog.close();
      hooks.toast(message);
    } catch (e) {
      if (e instanceof AuthFailure) {
        dialog.close();
        hooks.authFailed();
        return;
      }
      const failure = e instanceof RpcFailure ? e : new RpcFailure('NETWORK', (e as Error).message);
      error.textContent = `${failure.message} (${failure.code})`;
      error.hidden = false;
      const label = forced ? null : spec.forceLabel?.(failure) ?? null;
      force.hidden = label === null;
      if (label !== null) force.textContent = label;
      (label !== null ? force : confirm).focus();
    } finally {
      busy = false;
      for (const b of [confirm, force, cancel]) b.disabled = false;
    }
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    void attempt(false);
  });
  force.addEventListener('click', () => void attempt(true));
  cancel.addEventListener('click', () => dialog.close());
  dialog.oncancel = (e) => { if (busy) e.preventDefault(); }; // one handler: the element is reused
  dialog.setAttribute('aria-labelledby', 'dialog-title');
  dialog.replaceChildren(form);
  dialog.showModal();
  (inputs[0] ?? (spec.danger ? cancel : confirm)).focus();
}

function fieldInput(f: Field): HTMLInputElement | HTMLSelectElement {
  const common = { id: `field-${f.name}`, name: f.name, required: f.required, 'aria-describedby': f.hint ? `hint-${f.name}` : undefined };
  if (f.kind === 'select') {
    return h('select', common, (f.options ?? []).map((o) => h('option', { value: o.value, selected: o.value === f.value }, o.label)));
  }
  if (f.kind === 'checkbox') return h('input', { ...common, type: 'checkbox', checked: f.value === 'on' });
  return h('input', {
    ...common, type: f.kind === 'number' ? 'number' : 'text', autocomplete: 'off', spellcheck: 'false',
    placeholder: f.placeholder, pattern: f.pattern, maxlength: f.maxLength, min: f.min, value: f.value,
  });
}

/** A dialog that only shows something (the nbd:// URI when the clipboard is unavailable). */
export function showText(title: string, label: string, text: string): void {
  const dialog = dialogElement();
  const input = h('input', { id: 'field-show', type: 'text', readonly: true, value: text });
  const close = h('button', { type: 'button', class: 'primary' }, 'Close');
  close.addEventListener('click', () => dialog.close());
  dialog.oncancel = null;
  dialog.replaceChildren(h('form', {},
    h('h2', { id: 'dialog-title' }, title),
    h('div', { class: 'field' }, h('label', { for: 'field-show' }, label), input),
    h('div', { class: 'buttons' }, close)));
  dialog.showModal();
  input.select();
}
