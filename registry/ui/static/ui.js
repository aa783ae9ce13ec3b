// registry web page: the only script. Copy buttons for the snippets; nothing else
// needs a script (filtering, sorting and paging are links the server answers).
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.target);
  if (!source) return;
  const text = source.textContent;
  const done = (label) => {
    button.textContent = label;
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => done("Copied"), () => select(source, done));
  } else {
    select(source, done);
  }
});

function select(source, done) {
  const range = document.createRange();
  range.selectNodeContents(source);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  done(document.execCommand && document.execCommand("copy") ? "Copied" : "Selected");
}
