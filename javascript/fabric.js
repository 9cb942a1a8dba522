// FABRIC: what the panel's event handlers read from the page (used in gradio `_js` strings).
// Plain global functions, prefixed fabric_, like the webui's own scripts.

function fabric_root() {
    return typeof gradioApp === 'function' ? gradioApp() : document;
}

// {index: n}: the selected image of a FABRIC gallery (elem_id), -1 when none is selected.
function fabric_gallery_selection(elemId) {
    var thumbs = fabric_root().querySelectorAll('#' + elemId + ' .thumbnail-item.thumbnail-small');
    var index = Array.prototype.findIndex.call(thumbs, function(el) {
        return el.classList.contains('selected');
    });
    return {index: index};
}

// The index selected in the output gallery of the visible tab (the webui's helper), -1 when none.
function fabric_output_index() {
    return typeof selected_gallery_index === 'function' ? selected_gallery_index() : -1;
}

// The webui's generation info JSON of a tab (for index_of_first_image), '' when absent.
function fabric_generation_info(tabname) {
    var box = fabric_root().querySelector('#generation_info_' + tabname + ' textarea');
    return box ? box.value : '';
}

// Enter in a weight box applies the weight (gradio applies a slider's typed value on blur).
document.addEventListener('keydown', function(event) {
    var target = event.target;
    if (event.key === 'Enter' && target && target.matches && target.matches('.fabric-weight input[type=number]')) {
        target.blur();
    }
}, true);
