// Jobs in admin: the copy buttons next to short ids copy the full id (the column is a link: the click stays here).
document.addEventListener("click", function (event) {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  event.preventDefault();
  event.stopPropagation();
  const done = function () {
    button.textContent = "✓";
    setTimeout(function () { button.textContent = "⧉"; }, 1200);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(button.dataset.copy).then(done);
  } else {  // plain http on another host: the old way
    const area = document.createElement("textarea");
    area.value = button.dataset.copy;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }
});
