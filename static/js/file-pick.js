/* File fields (templates/_file_pick.html): show the chosen file's name in the page's language. */
(function () {
  "use strict";
  var picks = document.querySelectorAll(".file-pick");
  Array.prototype.forEach.call(picks, function (pick) {
    var input = pick.querySelector("input[type=file]");
    var name = pick.querySelector(".file-pick-name");
    function show() {
      name.textContent = input.files && input.files.length ? input.files[0].name : name.getAttribute("data-none");
    }
    input.addEventListener("change", show);
    show();
  });
})();
