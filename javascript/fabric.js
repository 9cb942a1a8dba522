// FABRIC: what the panel's event handlers read from the page (used in gradio `_js` strings).
// Plain global functions, prefixed fabric_, like the webui's own scripts.

function fabric_root() {
    return typeof gradioApp === 'function' ? gradioApp() : document;
}

// The selected image's index among a gallery's preview thumbnails (gradio 3.41 and 4.40 alike),
// -1 when none is selected.
function fabric_selected_index(gallery) {
    var thumbs = gallery ? gallery.querySelectorAll('.thumbnail-item.thumbnail-small') : [];
    return Array.prototype.findIndex.call(thumbs, function(el) {
        return el.classList.contains('selected');
    });
}

// {index: n}: the selected image of a FABRIC gallery (elem_id), -1 when none is selected.
function fabric_gallery_selection(elemId) {
    return {index: fabric_selected_index(fabric_root().querySelector('#' + elemId))};
}

// Each set's column carries fabric-has-selection while an image of its gallery is selected, so
// that the weight and ❌ (style.css) show exactly when the handlers find an image to act on.
function fabric_mark_selections() {
    var sets = fabric_root().querySelectorAll('.fabric-set');
    Array.prototype.forEach.call(sets, function(set) {
        var selected = fabric_selected_index(set.querySelector('.fabric-gallery')) >= 0;
        if (set.classList.contains('fabric-has-selection') !== selected) {
            set.classList.toggle('fabric-has-selection', selected);
        }
    });
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

// Galleries change selection on clicks, keys and new values: re-mark after any change in the page,
// at most once per frame.
document.addEventListener('DOMContentLoaded', function() {
    var pending = false;
    new MutationObserver(function() {
        if (!pending) {
            pending = true;
            requestAnimationFrame(function() {
                pending = false;
                fabric_mark_selections();
            });
        }
    }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
});
